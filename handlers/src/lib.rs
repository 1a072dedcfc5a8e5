//! rumor's handler side: the event model, Serf's event filters and handler contract, and the
//! runtime that runs shell handlers for events.
//!
//! This crate knows nothing of gossip. The agent turns what the cluster reports into
//! [`Event`]s and gives them to a [`Dispatcher`], which runs every handler whose
//! [`EventFilter`] (and tag filter) selects the event:
//!
//! * [`event`]: the events ([`Event`], [`MemberInfo`], [`UserEvent`], [`QueryEvent`]).
//! * [`filter`]: Serf's filter syntax ([`EventFilter`]) and the `--event-handler
//!   [FILTER=]COMMAND` flag ([`HandlerSpec`]).
//! * [`config`]: one handler's settings ([`HandlerConfig`]).
//! * [`contract`]: the environment and stdin a handler gets, exactly as Serf sets them, plus
//!   `RUMOR_*` twins.
//! * [`priority`]: the agent's threads a few nice levels above its handlers.
//! * [`thread`]: the thread (and runtime) handlers run on, at their own priority.
//! * [`shell`]: one run of `/bin/sh -c COMMAND` with a timeout that kills its process group
//!   and bounded output capture.
//! * [`coalesce`]: Serf's coalescing of member and user events, as pure logic.
//! * [`dispatcher`]: per-handler tasks and bounded queues, concurrency across handlers, order
//!   within one, reload, status, and query answers.
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

pub mod coalesce;
pub mod config;
pub mod contract;
pub mod dispatcher;
pub mod event;
pub mod filter;
pub mod priority;
pub mod shell;
pub mod thread;

pub use coalesce::Coalescer;
pub use config::{ConfigError, DEFAULT_TIMEOUT, HandlerConfig};
pub use contract::LocalNode;
pub use dispatcher::{
    DEFAULT_QUEUE_CAPACITY, Dispatcher, HANDLED_WINDOW, HandledEvents, HandledRun, HandlerStatus,
    LastRun, QueryRuns,
};
pub use event::{Event, MemberEventKind, MemberInfo, QueryEvent, Tags, UserEvent};
pub use filter::{EventFilter, FilterError, FilterItem, HandlerSpec};
pub use shell::{OUTPUT_LIMIT, RunResult};
pub use thread::HandlerThread;
