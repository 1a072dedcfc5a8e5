//! The one interface between the dispatcher and what a handler does: [`Runtime`].
//!
//! The dispatcher decides *when* a handler runs and *on what*: Serf's filters, coalescing, one
//! run at a time per handler and all handlers side by side, the handled-events record, status.
//! A runtime decides *how* one run happens. [`Shell`](crate::shell::Shell) runs `/bin/sh -c
//! COMMAND` under Serf's contract; a template, WASM or Docker runtime is another module of this
//! crate that implements the same trait, picked by [`RuntimeConfig`](crate::RuntimeConfig), and
//! whatever its kind a handler keeps the dispatcher's filters, coalescing, ordering, timeouts
//! and record.
//!
//! # A run in, a result out
//!
//! [`Runtime::run`] gets a [`Run`]: the event (as the handler's filters and coalescing left
//! it), the local node as it is when the run starts, the handler's extra environment and its
//! timeout. They are borrowed for the call only: a runtime takes what it needs before it returns
//! its future (the shell its environment and stdin, a WASM runtime the event as JSON). The
//! future ends with a [`RunResult`]; the dispatcher awaits it before the handler's next run.
//!
//! What every runtime owes the dispatcher:
//!
//! * **The timeout.** It stops the work at [`Run::timeout`] (the shell kills its process group,
//!   a WASM runtime runs out of fuel or wall-clock, Docker stops the container) and reports
//!   [`RunResult::timed_out`]. Only the runtime knows how to stop what it started, so the
//!   dispatcher does not race the future against a timer of its own.
//! * **Cancellation.** Dropping the future stops the run and leaves nothing behind (the shell
//!   kills its process group). The dispatcher drops it when the runtime it runs on stops (agent
//!   shutdown, [`HandlerThread`](crate::HandlerThread) dropped).
//! * **Bounded output.** [`RunResult::stdout`] and [`RunResult::stderr`] hold at most
//!   [`OUTPUT_LIMIT`] bytes each, the last ones ([`TailBuffer`](crate::output::TailBuffer)).
//! * **An answer.** For a query, the stdout of a successful run is this node's answer.
//! * **No panic, no error.** A run that cannot start is a result with [`RunResult::error`] set
//!   and [`RunResult::started`] false ([`RunResult::not_started`]): nothing ran, so the
//!   dispatcher tries it again (a shell that could not start because the agent had no free
//!   file descriptor starts a moment later), and never records it as handled. Once anything
//!   may have run, `started` is true, whatever happened next.
//!
//! # Cluster state
//!
//! Runtimes never get the cluster handle. What they need of cluster state reaches them as
//! read-only views the agent publishes through the dispatcher: the local node today
//! ([`Dispatcher::set_local`](crate::Dispatcher::set_local), in every [`Run`]), and the member
//! list ([`Dispatcher::set_members`](crate::Dispatcher::set_members)), which a runtime that
//! renders cluster state gets when it is made (a template watches it to wait for quiet), in a
//! [`RuntimeContext`]. The one thing a runtime may change is its own node, through the narrow
//! [`NodeControl`] in the same context (a docker deploy sets the node's tags and sends its
//! notify event; see [`crate::node_control`]).
//!
//! # Why a trait and not an enum
//!
//! Each runtime has state of its own (a compiled WASM module and its engine, a Docker client)
//! and dependencies of its own (wasmi, bollard, behind cargo features). As a trait, each is a
//! module added beside the others, with no match listing them all in the run path, and a test or
//! an embedder can hand the dispatcher a runtime of its own
//! ([`RuntimeConfig::Custom`](crate::RuntimeConfig::Custom)). The dispatcher holds one
//! `Arc<dyn Runtime>` per handler; the price is one boxed future per run, next to a process
//! start, a WASM instantiation or a Docker call. Which runtime a handler uses is an enum,
//! [`RuntimeConfig`](crate::RuntimeConfig): that is configuration, data that is compared on a
//! reload and shown by `rumor info`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::contract::LocalNode;
use crate::event::Event;
use crate::members::Members;
use crate::node_control::NodeControl;
#[cfg(doc)]
use crate::output::OUTPUT_LIMIT;
use crate::template::{TemplateGroups, TemplateStatus};
use crate::wasm::WasmStatus;

/// What runs a handler's runs; see the module docs for what an implementation owes.
pub trait Runtime: Send + Sync {
    /// Starts one run: takes what it needs of `run` now, and returns the future that does the
    /// work and ends with its result. Dropping the future cancels the run.
    fn run<'r>(&'r self, run: &Run<'_>) -> RunFuture<'r>;

    /// A run to do as soon as the handler starts, before any event, or `None` (the default).
    /// A template renders then, so its file is right from the start; the dispatcher counts
    /// and logs it like any run.
    fn start<'r>(&'r self, start: &Start<'_>) -> Option<RunFuture<'r>> {
        let _ = start;
        None
    }

    /// What this runtime has to add to the handler's status (a template's renders and
    /// reloads), or `None` (the default).
    fn details(&self) -> Option<RuntimeDetails> {
        None
    }
}

/// A handler's run at its start ([`Runtime::start`]): what a [`Run`] has, without an event.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Start<'a> {
    pub handler: &'a str,
    pub local: &'a LocalNode,
    pub env: &'a BTreeMap<String, String>,
    pub timeout: Duration,
}

/// What a runtime is made with: the agent's published views (the member list, the local
/// node), the groups templates share reloads in, and what a runtime may change of its node
/// once the agent hands it over (a docker deploy's tags).
#[derive(Clone)]
pub struct RuntimeContext {
    pub members: watch::Receiver<Option<Members>>,
    pub local: watch::Receiver<LocalNode>,
    pub groups: Arc<TemplateGroups>,
    pub node: watch::Receiver<Option<Arc<dyn NodeControl>>>,
}

/// What a runtime adds to a handler's status, by kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum RuntimeDetails {
    /// A template handler's renders, writes, check failures and reloads.
    Template(TemplateStatus),
    /// A WASM handler's compiles and the runs each limit stopped.
    Wasm(WasmStatus),
}

/// The work of one run, as a runtime returns it.
pub type RunFuture<'r> = Pin<Box<dyn Future<Output = RunResult> + Send + 'r>>;

/// One run, as the dispatcher hands it to a [`Runtime`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Run<'a> {
    /// The handler's name, for log lines and names the runtime gives what it starts.
    pub handler: &'a str,
    /// The event, as the handler's filters left it (a member event cut down to the members
    /// its tag filter selects) and its coalescing made it.
    pub event: &'a Event,
    /// The node the handler runs on, as it is when the run starts.
    pub local: &'a LocalNode,
    /// The handler's extra environment (`env` in its table), on top of the contract's.
    pub env: &'a BTreeMap<String, String>,
    /// How long the run may take before the runtime stops it.
    pub timeout: Duration,
}

impl<'a> Run<'a> {
    /// A run of `event` for handler `handler` on `local`: for a runtime driven without the
    /// dispatcher (a benchmark, an embedder's test).
    pub fn new(
        handler: &'a str,
        event: &'a Event,
        local: &'a LocalNode,
        env: &'a BTreeMap<String, String>,
        timeout: Duration,
    ) -> Run<'a> {
        Run {
            handler,
            event,
            local,
            env,
            timeout,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The exit code, when the run ended by exiting.
    pub exit_code: Option<i32>,
    /// The signal that ended the run (`9` after a shell's timeout).
    pub signal: Option<i32>,
    /// The run hit its timeout and was stopped.
    pub timed_out: bool,
    /// From the start to the end of the run.
    pub duration: Duration,
    pub started_at: SystemTime,
    /// The last [`OUTPUT_LIMIT`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// The last [`OUTPUT_LIMIT`] bytes of stderr.
    pub stderr: Vec<u8>,
    /// stdout or stderr was longer than [`OUTPUT_LIMIT`] and lost its beginning.
    pub truncated: bool,
    /// Why the run could not start, or could not be followed to its end, in words that name
    /// what failed (`could not start /bin/sh: …`).
    pub error: Option<String>,
    /// Whether anything ran: false when the run could not even start (see
    /// [`RunResult::not_started`]), and the dispatcher will try it again.
    pub started: bool,
}

impl RunResult {
    /// A run that could not start at `started_at`, having tried for `duration`, because of
    /// `error` (in words that name what failed).
    pub fn not_started(started_at: SystemTime, duration: Duration, error: String) -> RunResult {
        RunResult {
            exit_code: None,
            signal: None,
            timed_out: false,
            duration,
            started_at,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            error: Some(error),
            started: false,
        }
    }

    /// Exited with code 0 within the timeout.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.error.is_none()
    }

    /// When the run ended.
    pub fn finished_at(&self) -> SystemTime {
        self.started_at + self.duration
    }

    /// The last `max` bytes of stderr as text, trimmed, for a log line.
    pub fn stderr_tail(&self, max: usize) -> String {
        tail_text(&self.stderr, max)
    }

    /// The last `max` bytes of stdout as text, trimmed, for a log line.
    pub fn stdout_tail(&self, max: usize) -> String {
        tail_text(&self.stdout, max)
    }
}

impl fmt::Display for RunResult {
    /// How the run ended, in words: `exited with code 0`, `timed out after 1.001s; …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.error {
            return f.write_str(error);
        }
        if self.timed_out {
            return write!(
                f,
                "timed out after {:?}; its process group was killed",
                self.duration
            );
        }
        match (self.exit_code, self.signal) {
            (Some(127), _) => write!(f, "exited with code 127 (command not found)"),
            (Some(126), _) => write!(f, "exited with code 126 (command not executable)"),
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => write!(f, "ended with an unknown status"),
        }
    }
}

fn tail_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}
