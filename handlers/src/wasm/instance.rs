//! One run of a module: a fresh store and instance, `_start` called under the run's limits,
//! and what ended it ([`Outcome`]). Runs on a blocking thread: it is plain CPU work and host
//! calls, never an await.
//!
//! Fuel is given in slices ([`FUEL_SLICE`]) through a resumable call, not all at once: between
//! slices the run checks its deadline and whether it was abandoned, so a module that computes
//! in a loop with a large fuel budget still stops at its timeout. Memory is capped by the
//! store's limiter, which traps a `memory.grow` past the limit (rather than returning -1 that
//! a module may ignore), so the run ends saying which limit it hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmi::{Linker, Module, ResumableCall, Store, StoreLimits, StoreLimitsBuilder, TrapCode};
use wasmi_wasi::WasiCtx;

use super::limits::{LimitHit, Limits};
use super::modules::engine;
use super::sandbox::{self, Capture, Grants, Setup, Stops};

/// Fuel per slice: small enough that the deadline is checked every few milliseconds.
const FUEL_SLICE: u64 = 1_000_000;

/// A store's data: the WASI context and the memory limiter.
struct StoreData {
    wasi: WasiCtx,
    limits: StoreLimits,
}

/// The linker with WASI preview 1, shared by every run.
fn linker() -> &'static Linker<StoreData> {
    static LINKER: std::sync::OnceLock<Linker<StoreData>> = std::sync::OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(engine());
        wasmi_wasi::add_to_linker(&mut linker, |state: &mut StoreData| &mut state.wasi)
            .expect("WASI preview 1 links once into an empty linker");
        linker
    })
}

/// One run to do.
pub(crate) struct Job {
    /// `argv[0]`.
    pub program: String,
    pub stdin: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub grants: Arc<Grants>,
    pub limits: Limits,
    pub timeout: Duration,
    /// Set when the run's future was dropped: stop at the next slice.
    pub abandoned: Arc<AtomicBool>,
}

/// How a run ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The module exited (returned from `_start`: 0, or `proc_exit`).
    pub exit_code: Option<i32>,
    /// A limit stopped it.
    pub limit: Option<LimitHit>,
    /// It trapped, or could not be instantiated, in words.
    pub error: Option<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs the job to its end.
pub(crate) fn run(module: &Module, job: Job) -> Outcome {
    let deadline = Instant::now() + job.timeout;
    let stops = Arc::new(Stops::default());
    let stdout = Capture::new(job.limits.output, stops.clone());
    let stderr = Capture::new(job.limits.output, stops.clone());
    let ended = execute(
        module,
        &job,
        deadline,
        &stops,
        stdout.clone(),
        stderr.clone(),
    );
    let mut outcome = match ended {
        Ok(code) => Outcome {
            exit_code: Some(code),
            ..Outcome::default()
        },
        Err(end) => end.into_outcome(&job, &stops),
    };
    outcome.stdout = stdout.take();
    outcome.stderr = stderr.take();
    outcome
}

/// Why a run did not return an exit code.
enum End {
    Limit(LimitHit),
    Trap(wasmi::Error),
    Error(String),
}

impl End {
    fn into_outcome(self, job: &Job, stops: &Stops) -> Outcome {
        let limit = |hit| Outcome {
            limit: Some(hit),
            ..Outcome::default()
        };
        // A limit hit inside a host call shows as that call's trap: the flags say which.
        if stops.output.load(Ordering::Relaxed) {
            return limit(LimitHit::Output(job.limits.output));
        }
        if stops.time.load(Ordering::Relaxed) {
            return limit(LimitHit::Time(job.timeout));
        }
        match self {
            End::Limit(hit) => limit(hit),
            End::Trap(error) => {
                if let Some(code) = error.i32_exit_status() {
                    return Outcome {
                        exit_code: Some(code),
                        ..Outcome::default()
                    };
                }
                match error.as_trap_code() {
                    Some(TrapCode::OutOfFuel) => limit(LimitHit::Fuel),
                    Some(TrapCode::GrowthOperationLimited) => {
                        limit(LimitHit::Memory(job.limits.memory))
                    }
                    _ if is_memory_denied(&error) => limit(LimitHit::Memory(job.limits.memory)),
                    _ => Outcome {
                        error: Some(format!("trapped: {error}")),
                        ..Outcome::default()
                    },
                }
            }
            End::Error(error) => Outcome {
                error: Some(error),
                ..Outcome::default()
            },
        }
    }
}

/// Instantiation refused for a memory larger than the limit from the start.
fn is_memory_denied(error: &wasmi::Error) -> bool {
    matches!(
        error.kind(),
        wasmi::errors::ErrorKind::Memory(
            wasmi::errors::MemoryError::ResourceLimiterDeniedAllocation
        )
    )
}

fn execute(
    module: &Module,
    job: &Job,
    deadline: Instant,
    stops: &Arc<Stops>,
    stdout: Arc<Capture>,
    stderr: Arc<Capture>,
) -> Result<i32, End> {
    let wasi = sandbox::context(Setup {
        program: &job.program,
        stdin: job.stdin.clone(),
        env: &job.env,
        grants: &job.grants,
        stdout,
        stderr,
        deadline,
        stops: stops.clone(),
    })
    .map_err(End::Error)?;
    let memory = usize::try_from(job.limits.memory).unwrap_or(usize::MAX);
    let limits = StoreLimitsBuilder::new()
        .memory_size(memory)
        .trap_on_grow_failure(true)
        .build();
    let mut store = Store::new(engine(), StoreData { wasi, limits });
    store.limiter(|state| &mut state.limits);

    // Instantiation (data segments, a start function) draws on the same budget.
    set_fuel(&mut store, job.limits.fuel)?;
    let instance = linker()
        .instantiate_and_start(&mut store, module)
        .map_err(End::Trap)?;
    let mut left = store.get_fuel().unwrap_or(0);
    let mut given = left.min(FUEL_SLICE);
    set_fuel(&mut store, given)?;
    let start = instance
        .get_func(&store, "_start")
        .ok_or_else(|| End::Error("the module exports no _start function".into()))?;
    let mut call = start.call_resumable(&mut store, &[], &mut []);
    loop {
        match call {
            Ok(ResumableCall::Finished) => return Ok(0),
            Ok(ResumableCall::HostTrap(trap)) => return Err(End::Trap(trap.into_host_error())),
            Ok(ResumableCall::OutOfFuel(paused)) => {
                let remaining = store.get_fuel().unwrap_or(0);
                left = left.saturating_sub(given.saturating_sub(remaining));
                if left < paused.required_fuel().max(1) {
                    return Err(End::Limit(LimitHit::Fuel));
                }
                if Instant::now() >= deadline {
                    return Err(End::Limit(LimitHit::Time(job.timeout)));
                }
                if job.abandoned.load(Ordering::Relaxed) {
                    return Err(End::Error("abandoned: the agent is stopping".into()));
                }
                given = left.min(FUEL_SLICE.max(paused.required_fuel()));
                set_fuel(&mut store, given)?;
                call = paused.resume(&mut store, &mut []);
            }
            Err(error) => return Err(End::Trap(error)),
        }
    }
}

fn set_fuel(store: &mut Store<StoreData>, fuel: u64) -> Result<(), End> {
    store
        .set_fuel(fuel)
        .map_err(|e| End::Error(format!("setting fuel: {e}")))
}
