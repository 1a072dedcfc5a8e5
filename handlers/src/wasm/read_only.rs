//! A granted directory the handler may read but not change ([`ReadOnly`]).
//!
//! wasi-common's directories have no read-only mode of their own, so this wraps one: reads
//! pass through, every change (open for writing, create, truncate, remove, rename, link, set
//! times) fails with `EPERM` inside WASI, and a directory opened inside it is wrapped again,
//! so no path below the grant is writable. Its `as_any` is the wrapper itself, so a rename or
//! link between it and a writable grant (which needs both sides to be the same concrete type)
//! fails too.

use std::any::Any;
use std::path::PathBuf;

use wasmi_wasi::wasi_common::dir::{OpenResult, ReaddirCursor, ReaddirEntity, WasiDir};
use wasmi_wasi::wasi_common::file::{FdFlags, Filestat, OFlags};
use wasmi_wasi::wasi_common::{Error, ErrorExt, SystemTimeSpec};

/// A directory whose contents can be read, never changed.
pub struct ReadOnly(pub Box<dyn WasiDir>);

#[async_trait::async_trait]
impl WasiDir for ReadOnly {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn open_file(
        &self,
        symlink_follow: bool,
        path: &str,
        oflags: OFlags,
        read: bool,
        write: bool,
        fdflags: FdFlags,
    ) -> Result<OpenResult, Error> {
        let changes = OFlags::CREATE | OFlags::TRUNCATE | OFlags::EXCLUSIVE;
        if write || oflags.intersects(changes) || fdflags.contains(FdFlags::APPEND) {
            return Err(denied());
        }
        match self
            .0
            .open_file(symlink_follow, path, oflags, read, false, fdflags)
            .await?
        {
            OpenResult::Dir(dir) => Ok(OpenResult::Dir(Box::new(ReadOnly(dir)))),
            file => Ok(file),
        }
    }

    async fn readdir(
        &self,
        cursor: ReaddirCursor,
    ) -> Result<Box<dyn Iterator<Item = Result<ReaddirEntity, Error>> + Send>, Error> {
        self.0.readdir(cursor).await
    }

    async fn read_link(&self, path: &str) -> Result<PathBuf, Error> {
        self.0.read_link(path).await
    }

    async fn get_filestat(&self) -> Result<Filestat, Error> {
        self.0.get_filestat().await
    }

    async fn get_path_filestat(
        &self,
        path: &str,
        follow_symlinks: bool,
    ) -> Result<Filestat, Error> {
        self.0.get_path_filestat(path, follow_symlinks).await
    }

    async fn create_dir(&self, _path: &str) -> Result<(), Error> {
        Err(denied())
    }

    async fn symlink(&self, _old_path: &str, _new_path: &str) -> Result<(), Error> {
        Err(denied())
    }

    async fn remove_dir(&self, _path: &str) -> Result<(), Error> {
        Err(denied())
    }

    async fn unlink_file(&self, _path: &str) -> Result<(), Error> {
        Err(denied())
    }

    async fn rename(
        &self,
        _path: &str,
        _dest_dir: &dyn WasiDir,
        _dest_path: &str,
    ) -> Result<(), Error> {
        Err(denied())
    }

    async fn hard_link(
        &self,
        _path: &str,
        _target_dir: &dyn WasiDir,
        _target_path: &str,
    ) -> Result<(), Error> {
        Err(denied())
    }

    async fn set_times(
        &self,
        _path: &str,
        _atime: Option<SystemTimeSpec>,
        _mtime: Option<SystemTimeSpec>,
        _follow_symlinks: bool,
    ) -> Result<(), Error> {
        Err(denied())
    }
}

fn denied() -> Error {
    Error::perm().context("the directory is granted read-only")
}
