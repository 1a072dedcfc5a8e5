//! What a WASM handler's run can reach: its WASI context, built fresh for every run.
//!
//! Nothing by default: stdin is the event ([`event_json`](super::event_json)), stdout and
//! stderr go to bounded buffers ([`Capture`]), the environment is the contract's variables
//! and the handler's own `env`. A handler's grants ([`Grants`]) add directories (preopened,
//! read-only unless granted writable, [`ReadOnly`]) and named variables of the agent's own
//! environment. There is no network (WASI preview 1 has no socket to open) and no file
//! outside a grant: the preopened directories are cap-std directories, which refuse any path
//! that leaves them (`..`, absolute paths, symlinks pointing out).
//!
//! Two host calls can make a run wait: sleeping (`poll_oneoff` with a clock) and nothing
//! else the contract offers. The scheduler here ([`Bounded`]) lets no such wait pass the run's
//! deadline: fuel does not count time spent in host calls, so it is the deadline that stops a
//! module asleep.

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmi_wasi::wasi_common::dir::WasiDir;
use wasmi_wasi::wasi_common::file::{FdFlags, FileType};
use wasmi_wasi::wasi_common::pipe::ReadPipe;
use wasmi_wasi::wasi_common::sched::{Poll, WasiSched};
use wasmi_wasi::wasi_common::sync::{Dir, ambient_authority, clocks_ctx, random_ctx};
use wasmi_wasi::wasi_common::{Error, Table, WasiCtx, WasiFile};

use super::read_only::ReadOnly;

/// What a handler may reach beyond the contract.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Directories, preopened for the module.
    pub dirs: Vec<DirGrant>,
    /// Names of the agent's environment variables the module gets (when the agent has them).
    pub host_env: Vec<String>,
}

/// One granted directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// The path the module opens it by (e.g. `/data`).
    pub guest: String,
    /// The module may create, change and remove files in it; otherwise it may only read.
    pub writable: bool,
}

/// Which limit stopped a run from inside a host call; read after the run.
#[derive(Debug, Default)]
pub(crate) struct Stops {
    pub output: AtomicBool,
    pub time: AtomicBool,
}

/// A run's stdout or stderr: keeps what the module writes, up to a limit. A write past it
/// stops the run (a trap), so a module that floods its output is cut off at once instead of
/// spinning until its fuel runs out.
pub(crate) struct Capture {
    bytes: Mutex<Vec<u8>>,
    limit: usize,
    stops: Arc<Stops>,
}

impl Capture {
    pub fn new(limit: u64, stops: Arc<Stops>) -> Arc<Capture> {
        Arc::new(Capture {
            bytes: Mutex::new(Vec::new()),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            stops,
        })
    }

    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut crate::lock(&self.bytes))
    }
}

struct CaptureFile(Arc<Capture>);

#[async_trait::async_trait]
impl WasiFile for CaptureFile {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(FileType::Pipe)
    }

    async fn get_fdflags(&self) -> Result<FdFlags, Error> {
        Ok(FdFlags::APPEND)
    }

    async fn write_vectored<'a>(&self, bufs: &[std::io::IoSlice<'a>]) -> Result<u64, Error> {
        let capture = &self.0;
        let mut bytes = crate::lock(&capture.bytes);
        let mut written = 0u64;
        for buf in bufs {
            let room = capture.limit.saturating_sub(bytes.len());
            if buf.len() > room {
                // Keep what fits: the start of a flood says what it was.
                bytes.extend_from_slice(&buf[..room]);
                capture.stops.output.store(true, Ordering::Relaxed);
                return Err(Error::trap(anyhow::anyhow!("output limit")));
            }
            bytes.extend_from_slice(buf);
            written += buf.len() as u64;
        }
        Ok(written)
    }
}

/// The scheduler: waits as WASI asks, but never past the run's deadline; a wait that would
/// is cut at the deadline and stops the run.
struct Bounded {
    deadline: Instant,
    stops: Arc<Stops>,
}

impl Bounded {
    /// Whether a wait of `wait` fits before the deadline; if not, waits until the deadline and
    /// returns the error that stops the run.
    fn check(&self, wait: Duration) -> Result<(), Error> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if wait < left {
            return Ok(());
        }
        std::thread::sleep(left);
        self.stops.time.store(true, Ordering::Relaxed);
        Err(Error::trap(anyhow::anyhow!("timed out")))
    }
}

#[async_trait::async_trait]
impl WasiSched for Bounded {
    async fn poll_oneoff<'a>(&self, poll: &mut Poll<'a>) -> Result<(), Error> {
        if let Some(clock) = poll.earliest_clock_deadline() {
            self.check(clock.duration_until().unwrap_or_default())?;
        }
        wasmi_wasi::wasi_common::sync::sched::poll_oneoff(poll).await
    }

    async fn sched_yield(&self) -> Result<(), Error> {
        std::thread::yield_now();
        Ok(())
    }

    async fn sleep(&self, duration: Duration) -> Result<(), Error> {
        self.check(duration)?;
        std::thread::sleep(duration);
        Ok(())
    }
}

/// What one run's context is made of.
pub(crate) struct Setup<'a> {
    /// `argv[0]`: the module's file name.
    pub program: &'a str,
    pub stdin: Vec<u8>,
    pub env: &'a [(String, String)],
    pub grants: &'a Grants,
    pub stdout: Arc<Capture>,
    pub stderr: Arc<Capture>,
    pub deadline: Instant,
    pub stops: Arc<Stops>,
}

/// The WASI context of one run. Fails (naming what) when a granted directory cannot be
/// opened.
pub(crate) fn context(setup: Setup<'_>) -> Result<WasiCtx, String> {
    let sched = Bounded {
        deadline: setup.deadline,
        stops: setup.stops,
    };
    let mut ctx = WasiCtx::new(random_ctx(), clocks_ctx(), Box::new(sched), Table::new());
    ctx.set_stdin(Box::new(ReadPipe::from(setup.stdin)));
    ctx.set_stdout(Box::new(CaptureFile(setup.stdout)));
    ctx.set_stderr(Box::new(CaptureFile(setup.stderr)));
    ctx.push_arg(setup.program)
        .map_err(|e| format!("argument {:?}: {e}", setup.program))?;
    for (key, value) in setup.env {
        ctx.push_env(key, value)
            .map_err(|e| format!("environment variable {key:?}: {e}"))?;
    }
    for name in &setup.grants.host_env {
        if let Ok(value) = std::env::var(name) {
            ctx.push_env(name, &value)
                .map_err(|e| format!("environment variable {name:?}: {e}"))?;
        }
    }
    for grant in &setup.grants.dirs {
        let dir = Dir::open_ambient_dir(&grant.host, ambient_authority()).map_err(|e| {
            format!(
                "cannot open the granted directory {}: {e}",
                grant.host.display()
            )
        })?;
        let dir: Box<dyn WasiDir> =
            Box::new(wasmi_wasi::wasi_common::sync::dir::Dir::from_cap_std(dir));
        let dir: Box<dyn WasiDir> = if grant.writable {
            dir
        } else {
            Box::new(ReadOnly(dir))
        };
        ctx.push_preopened_dir(dir, &grant.guest)
            .map_err(|e| format!("granting {}: {e}", grant.host.display()))?;
    }
    Ok(ctx)
}
