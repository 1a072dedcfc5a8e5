//! The cluster benchmark behind `cluster-bench` (see docs/performance.md).
//!
//! - [`agents`]: N `rumor agent` or `serf agent` processes on 127.0.0.1 and the CLI calls
//!   made against them.
//! - [`measure`]: the measurements, in order (join, handler floor and events, queries,
//!   memory, idle CPU and traffic, failure detection).
//! - [`host`]: /proc, the iptables byte counter, Ctrl-C, the release build of `rumor`.
//! - [`report`]: the figures and their text and JSON output.
//!
//! The in-process simulation (`--sim N`) lives in the agent crate, `rumor::cluster::sim`,
//! because it drives the cluster's own state and foca handler.

pub mod agents;
pub mod host;
pub mod measure;
pub mod report;
