//! Where an install comes from: a built-in plugin by name, a folder, or a `.tar.gz` archive;
//! each is copied into a staging folder that the install then checks.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::{PluginError, catalog};

/// An archive may hold at most this many bytes once unpacked, and this many entries: a plugin
/// is templates and scripts, and a hostile archive must not fill the disk.
const ARCHIVE_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
const ARCHIVE_ENTRIES_LIMIT: usize = 10_000;

/// What `rumor plugin install` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A built-in plugin.
    Catalog(String),
    /// A plugin folder.
    Folder(PathBuf),
    /// A `.tar.gz` of a plugin folder (its files at the top, or in one top folder).
    Archive(PathBuf),
}

impl Source {
    /// An absolute path is a folder or an archive (whichever it is); anything else names a
    /// built-in plugin.
    pub fn parse(text: &str) -> Result<Source, PluginError> {
        let path = Path::new(text);
        if !path.is_absolute() {
            if text.contains('/') || text.ends_with(".tar.gz") || text.ends_with(".tgz") {
                return Err(PluginError::NotFound(format!(
                    "{text:?} is a relative path; give the agent an absolute one (the rumor \
                     command line does this for you)"
                )));
            }
            return Ok(Source::Catalog(text.to_string()));
        }
        let meta = fs::metadata(path).map_err(|e| {
            PluginError::NotFound(format!("cannot install from {}: {e}", path.display()))
        })?;
        Ok(if meta.is_dir() {
            Source::Folder(path.to_path_buf())
        } else {
            Source::Archive(path.to_path_buf())
        })
    }

    /// Copies the plugin's files into `staging` (an empty folder).
    pub fn copy_to(&self, staging: &Path) -> Result<(), PluginError> {
        match self {
            Source::Catalog(name) => catalog::write_to(name, staging),
            Source::Folder(dir) => copy_folder(dir, staging),
            Source::Archive(file) => unpack(file, staging),
        }
    }
}

fn copy_folder(from: &Path, to: &Path) -> Result<(), PluginError> {
    let io = |what: &Path, e: std::io::Error| {
        PluginError::Io(format!("cannot copy {}: {e}", what.display()))
    };
    for entry in fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| io(&path, e))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            fs::create_dir(&target).map_err(|e| io(&target, e))?;
            copy_folder(&path, &target)?;
        } else if kind.is_file() {
            fs::copy(&path, &target).map_err(|e| io(&path, e))?;
        } else {
            return Err(PluginError::Checksum(format!(
                "{} is neither a file nor a folder (a symlink?): a plugin holds plain files only",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Unpacks a `.tar.gz`: plain files and folders only, paths inside the archive only, within
/// the size limits. When every entry is inside one top folder, that folder is the plugin.
fn unpack(file: &Path, staging: &Path) -> Result<(), PluginError> {
    let bad = |why: String| PluginError::Archive(format!("{}: {why}", file.display()));
    let reader = fs::File::open(file).map_err(|e| bad(e.to_string()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a .tar.gz archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a .tar.gz archive ({e})")))?;
        if files.len() >= ARCHIVE_ENTRIES_LIMIT {
            return Err(bad(format!("more than {ARCHIVE_ENTRIES_LIMIT} entries")));
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry has an unreadable path ({e})")))?
            .into_owned();
        let clean: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if clean
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(bad(format!(
                "entry {} points outside the archive",
                path.display()
            )));
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            // pax headers and the like carry metadata, not files.
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => continue,
            other => {
                return Err(bad(format!(
                    "entry {} is a {other:?}: a plugin holds plain files only",
                    path.display()
                )));
            }
        }
        let mut bytes = Vec::new();
        let limit = ARCHIVE_BYTES_LIMIT - total;
        (&mut entry)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read entry {} ({e})", path.display())))?;
        total += bytes.len() as u64;
        if total > ARCHIVE_BYTES_LIMIT {
            return Err(bad(format!(
                "more than {} MiB once unpacked",
                ARCHIVE_BYTES_LIMIT >> 20
            )));
        }
        if clean.as_os_str().is_empty() {
            continue;
        }
        files.push((clean, bytes));
    }
    if files.is_empty() {
        return Err(bad("the archive holds no file".into()));
    }
    // One top folder for everything: strip it.
    let first = files[0]
        .0
        .components()
        .next()
        .map(|c| c.as_os_str().to_owned());
    let one_top = files.iter().all(|(p, _)| {
        p.components().count() > 1
            && p.components().next().map(|c| c.as_os_str().to_owned()) == first
    });
    for (path, bytes) in files {
        let relative: PathBuf = if one_top {
            path.components().skip(1).collect()
        } else {
            path
        };
        let target = staging.join(&relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| bad(e.to_string()))?;
        }
        fs::write(&target, bytes).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (path, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses '..'; write the raw name to test what a hostile archive holds.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn archives_unpack_with_or_without_a_top_folder() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("p.tar.gz");
        fs::write(
            &archive,
            tar_gz(&[("p/plugin.toml", b"m"), ("p/t/a.j2", b"a")]),
        )
        .unwrap();
        let staging = dir.path().join("s1");
        fs::create_dir(&staging).unwrap();
        Source::parse(archive.to_str().unwrap())
            .unwrap()
            .copy_to(&staging)
            .unwrap();
        assert_eq!(fs::read(staging.join("plugin.toml")).unwrap(), b"m");
        assert_eq!(fs::read(staging.join("t/a.j2")).unwrap(), b"a");

        fs::write(&archive, tar_gz(&[("plugin.toml", b"m"), ("a.j2", b"a")])).unwrap();
        let staging = dir.path().join("s2");
        fs::create_dir(&staging).unwrap();
        unpack(&archive, &staging).unwrap();
        assert_eq!(fs::read(staging.join("a.j2")).unwrap(), b"a");
    }

    #[test]
    fn hostile_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("p.tar.gz");
        fs::write(&archive, tar_gz(&[("../evil", b"x")])).unwrap();
        let err = unpack(&archive, dir.path()).unwrap_err().to_string();
        assert!(err.contains("outside the archive"), "{err}");
        fs::write(&archive, b"not gzip").unwrap();
        let err = unpack(&archive, dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a .tar.gz"), "{err}");
        assert!(!dir.path().parent().unwrap().join("evil").exists());
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(
            Source::parse("haproxy").unwrap(),
            Source::Catalog("haproxy".into())
        );
        assert!(Source::parse("./x").is_err());
        assert!(Source::parse("/no/such/plugin").is_err());
    }
}
