//! rumor's handler side: the event model, Serf's event filters and handler contract, and the
//! runtimes that run handlers for events.
//!
//! This crate knows nothing of gossip. The agent turns what the cluster reports into
//! [`Event`]s and gives them to a [`Dispatcher`], which runs every handler whose
//! [`EventFilter`] (and tag filter) selects the event:
//!
//! * [`event`]: the events ([`Event`], [`MemberInfo`], [`UserEvent`], [`QueryEvent`]).
//! * [`filter`]: Serf's filter syntax ([`EventFilter`]) and the `--event-handler
//!   [FILTER=]COMMAND` flag ([`HandlerSpec`]).
//! * [`config`]: one handler's settings ([`HandlerConfig`]) and which runtime it runs on
//!   ([`RuntimeConfig`]).
//! * [`dispatcher`]: per-handler tasks and bounded queues, concurrency across handlers, order
//!   within one, coalescing, reload.
//! * [`coalesce`]: Serf's coalescing of member and user events, as pure logic.
//! * `serial`: serial groups, handlers that take turns as all of Serf's do.
//! * [`runtime`]: the one interface between the dispatcher and what a handler does
//!   ([`Runtime`]), and what a run gives back ([`RunResult`]).
//! * [`shell`]: the shell runtime, one run of `/bin/sh -c COMMAND` with a timeout that kills
//!   its process group.
//! * [`template`]: the template runtime: render (minijinja) the member list into a file,
//!   check, swap atomically, reload on change, with quiescence.
//! * [`docker`]: the docker runtime: rolling blue/green deploys of an app's container.
//! * [`members`]: the member list runtimes that render cluster state are given.
//! * [`node_control`]: what a runtime may change of its node (tags, events).
//! * [`contract`]: the environment and stdin a handler gets, exactly as Serf sets them, plus
//!   `RUMOR_*` twins.
//! * [`output`]: bounded capture of a run's output.
//! * [`payload_json`]: payload bytes in JSON: text as a string, other bytes as base64.
//! * [`status`]: each handler's counters and last run, as `rumor info` shows them.
//! * [`handled_events`]: the user events each handler ran, so a restart runs none twice.
//! * [`query_runs`]: the runs of one query, and this node's answer.
//! * [`wasm`]: the WASM runtime: a WASI command in the wasmi interpreter, sandboxed, under
//!   fuel, memory, output and time limits, with the event as versioned JSON.
//! * [`thread`]: the thread (and Tokio runtime) handlers run on, prepared by its creator.
//!
//! ```no_run
//! use rumor_handlers::{Dispatcher, EventFilter, HandlerConfig, HandlerSpec, LocalNode};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = HandlerSpec::parse_cli("member-join,member-leave=/etc/rumor/update-lb.sh")?;
//! let mut deploy = HandlerConfig::new("deploy", EventFilter::parse("user:deploy")?, "./deploy.sh");
//! deploy.timeout = std::time::Duration::from_secs(300);
//! let local = LocalNode { name: "web-1".into(), tags: Default::default() };
//! let dispatcher = Dispatcher::new(local, vec![HandlerConfig::from_spec("cli-1", spec), deploy])?;
//! // dispatcher.dispatch(event) for each event from the cluster.
//! # Ok(()) }
//! ```

use std::sync::{Mutex, MutexGuard};

pub mod coalesce;
pub mod config;
pub mod contract;
pub mod dispatcher;
pub mod docker;
pub mod event;
pub mod filter;
pub mod handled_events;
pub mod members;
pub mod node_control;
pub mod output;
pub mod payload_json;
pub mod query_runs;
pub mod runtime;
mod serial;
pub mod shell;
pub mod status;
pub mod template;
pub mod thread;
pub mod wasm;

pub use coalesce::Coalescer;
pub use config::{ConfigError, DEFAULT_TIMEOUT, HandlerConfig, RuntimeConfig};
pub use contract::LocalNode;
pub use dispatcher::{DEFAULT_QUEUE_CAPACITY, Dispatcher};
pub use docker::DockerConfig;
pub use event::{Event, MemberEventKind, MemberInfo, QueryEvent, Tags, UserEvent};
pub use filter::{EventFilter, FilterError, FilterItem, HandlerSpec};
pub use handled_events::{HANDLED_WINDOW, HandledEvents, HandledRun};
pub use members::{Member, MemberStatus, Members};
pub use node_control::NodeControl;
pub use output::OUTPUT_LIMIT;
pub use query_runs::{NoAnswer, QueryRuns};
pub use runtime::{Run, RunFuture, RunResult, Runtime, RuntimeContext, RuntimeDetails, Start};
pub use status::{HandlerStatus, LastRun};
pub use template::{Setting, TemplateConfig, TemplateStatus};
pub use thread::HandlerThread;
pub use wasm::{WasmConfig, WasmStatus};

/// Locks a mutex, ignoring poisoning: the data behind this crate's locks stays consistent even
/// if a holder panicked (plain counters and replaced values).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
