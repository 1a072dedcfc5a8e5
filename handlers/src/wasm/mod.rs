//! The WASM runtime: a handler that is a WASI preview 1 command (`_start`), run in the wasmi
//! interpreter, sandboxed, under limits. docs/wasm.md is the handler author's guide.
//!
//! # The contract
//!
//! The same as a shell handler's, with the event as JSON: stdin is the event
//! ([`event_json`], versioned), the environment is the contract's `SERF_*`/`RUMOR_*`
//! variables ([`crate::contract`]) and the handler's `env`, stdout is the query answer,
//! stderr goes to the agent's log, and the exit code (`_start` returning is 0, `proc_exit(n)`
//! is n) is the result.
//!
//! # Why an interpreter, and what a run costs
//!
//! A handler's module is small and its run is short; what a run costs is mostly making
//! the instance. wasmi instantiates a small module several times faster than a compiling
//! engine, and builds in a fraction of the time and size (docs/wasm.md, docs/performance.md). Each module is
//! compiled once and kept ([`modules`]), compiled again when its file changes; every run gets
//! a fresh store and instance, so nothing one run leaves in memory reaches the next.
//!
//! # Limits and capabilities
//!
//! Per run ([`Limits`]): fuel (interpreter work), linear memory, bytes of stdout and of stderr,
//! and the handler's `timeout` as wall-clock time (host calls use no fuel; a sleep is cut at the
//! deadline). A run that exceeds one ends with an error that names it exactly ([`LimitHit`]:
//! `out of fuel`, `memory limit 16 MiB`, `output over 64 KiB`, `timed out after 2 s`), seen in
//! the log, in `rumor info` (the last run) and in the metrics ([`WasmStatus`]). A run is
//! work on a blocking thread of the handlers' runtime: a module that spins or sleeps holds that
//! thread only, never the agent or another handler.
//!
//! A module reaches nothing but its stdin, stdout, stderr and environment unless its handler
//! grants more ([`Grants`]: directories, read-only or writable, and named variables of the
//! agent's environment); see [`sandbox`].

mod event_json;
mod instance;
pub mod limits;
mod modules;
mod read_only;
pub mod sandbox;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

pub use event_json::{SCHEMA_VERSION, event_json};
pub use limits::{LimitHit, Limits};
pub use sandbox::{DirGrant, Grants};

use crate::contract;
use crate::runtime::{Run, RunFuture, RunResult, Runtime, RuntimeDetails};
use instance::{Job, Outcome};
use modules::ModuleCache;

/// How long past its timeout a run may take to notice it (a host call that blocks where the
/// scheduler cannot cut it) before the dispatcher is told it timed out anyway.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// A WASM handler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmConfig {
    /// The module: a `.wasm` binary or a `.wat` text file.
    pub module: PathBuf,
    /// The module's SHA-256 (hex) when a plugin ships it: checked at every compile.
    pub sha256: Option<String>,
    pub limits: Limits,
    pub grants: Grants,
}

impl WasmConfig {
    /// A handler running `module` with the default limits and no grants.
    pub fn new(module: impl Into<PathBuf>) -> WasmConfig {
        WasmConfig {
            module: module.into(),
            sha256: None,
            limits: Limits::default(),
            grants: Grants::default(),
        }
    }

    /// Checks what can be checked before a run: the limits, the grants, and that the module
    /// reads and compiles as a WASI command. Errors say what to change.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.fuel == 0 || l.memory == 0 || l.output == 0 {
            return Err("fuel, memory and output must be above zero".into());
        }
        if l.output > limits::DEFAULT_OUTPUT {
            return Err(format!(
                "output may be at most {} (what a run's output keeps)",
                limits::Bytes(limits::DEFAULT_OUTPUT)
            ));
        }
        for grant in &self.grants.dirs {
            if !grant.guest.starts_with('/') {
                return Err(format!(
                    "the guest path {:?} of granted directory {} must be absolute, such as \"/data\"",
                    grant.guest,
                    grant.host.display()
                ));
            }
            if !grant.host.is_dir() {
                return Err(format!(
                    "granted directory {} is not a directory",
                    grant.host.display()
                ));
            }
        }
        modules::compile(&self.module, self.sha256.as_deref()).map(drop)
    }
}

impl fmt::Display for WasmConfig {
    /// `wasm MODULE`, for logs and `rumor info`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wasm {}", self.module.display())
    }
}

/// A WASM handler's counters, as `rumor info --format json` and the metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmStatus {
    pub module: String,
    pub limits: Option<Limits>,
    /// Times the module was compiled (the first run, and after each change of its file).
    pub compiles: u64,
    /// Runs stopped by each limit.
    pub out_of_fuel: u64,
    pub memory_limit: u64,
    pub output_limit: u64,
    pub timed_out: u64,
}

impl WasmStatus {
    fn count(&mut self, hit: LimitHit) {
        match hit {
            LimitHit::Fuel => self.out_of_fuel += 1,
            LimitHit::Memory(_) => self.memory_limit += 1,
            LimitHit::Output(_) => self.output_limit += 1,
            LimitHit::Time(_) => self.timed_out += 1,
        }
    }
}

/// The runtime of one WASM handler.
pub struct Wasm {
    config: WasmConfig,
    modules: Arc<ModuleCache>,
    grants: Arc<Grants>,
    program: String,
    status: Arc<Mutex<WasmStatus>>,
}

impl Wasm {
    pub fn new(config: &WasmConfig) -> Wasm {
        let program = config
            .module
            .file_name()
            .map_or_else(|| "handler".into(), |n| n.to_string_lossy().into_owned());
        Wasm {
            modules: Arc::new(ModuleCache::new(
                config.module.clone(),
                config.sha256.clone(),
            )),
            grants: Arc::new(config.grants.clone()),
            program,
            status: Arc::new(Mutex::new(WasmStatus {
                module: config.module.display().to_string(),
                limits: Some(config.limits),
                ..WasmStatus::default()
            })),
            config: config.clone(),
        }
    }
}

/// Marks the run abandoned when its future is dropped, so the blocking work stops at its next
/// fuel slice.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Runtime for Wasm {
    fn run<'r>(&'r self, run: &Run<'_>) -> RunFuture<'r> {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let mut env = contract::environment(run.event, run.local);
        env.extend(run.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let stdin = event_json(run.event, run.local);
        let timeout = run.timeout;
        let handler = run.handler.to_string();
        let abandoned = Arc::new(AtomicBool::new(false));
        let modules = self.modules.clone();
        let status = self.status.clone();
        let job = Job {
            program: self.program.clone(),
            stdin,
            env,
            grants: self.grants.clone(),
            limits: self.config.limits,
            timeout,
            abandoned: abandoned.clone(),
        };
        Box::pin(async move {
            let _abandon = Abandon(abandoned);
            let work = tokio::task::spawn_blocking(move || {
                let (module, compiled) = match modules.get() {
                    Ok(found) => found,
                    Err(error) => {
                        return Outcome {
                            error: Some(error),
                            ..Outcome::default()
                        };
                    }
                };
                if compiled {
                    crate::lock(&status).compiles += 1;
                }
                instance::run(&module, job)
            });
            let outcome = match tokio::time::timeout(timeout + TIMEOUT_GRACE, work).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(error)) => Outcome {
                    error: Some(format!("the run failed: {error}")),
                    ..Outcome::default()
                },
                Err(_) => Outcome {
                    limit: Some(LimitHit::Time(timeout)),
                    ..Outcome::default()
                },
            };
            self.finish(&handler, started_at, start.elapsed(), outcome)
        })
    }

    fn details(&self) -> Option<RuntimeDetails> {
        Some(RuntimeDetails::Wasm(crate::lock(&self.status).clone()))
    }
}

impl Wasm {
    fn finish(
        &self,
        handler: &str,
        started_at: SystemTime,
        duration: Duration,
        outcome: Outcome,
    ) -> RunResult {
        if let Some(hit) = outcome.limit {
            crate::lock(&self.status).count(hit);
        }
        let result = RunResult {
            exit_code: outcome.exit_code,
            signal: None,
            timed_out: matches!(outcome.limit, Some(LimitHit::Time(_))),
            duration,
            started_at,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            truncated: matches!(outcome.limit, Some(LimitHit::Output(_))),
            error: outcome.limit.map(|hit| hit.to_string()).or(outcome.error),
            started: true,
        };
        if !result.stderr.is_empty() {
            tracing::info!(handler, stderr = %result.stderr_tail(4096), "wasm handler's stderr");
        }
        result
    }
}

#[cfg(test)]
mod tests;
