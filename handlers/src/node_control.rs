//! What a runtime may do to its own node, besides reading views: set the node's tags and send
//! a user event ([`NodeControl`]).
//!
//! # Why
//!
//! A Docker deploy's outcome *is* a tag change (`web_version`, `web_port`): that is what moves
//! traffic, through haproxy and DNS, with no proxy of rumor's own. Runtimes still never get the
//! cluster handle: the agent hands the dispatcher this narrow interface once the cluster runs
//! ([`Dispatcher::set_node_control`](crate::Dispatcher::set_node_control)), and a runtime
//! waits for it like for the first member list.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::event::Tags;

/// The future of a [`NodeControl`] call: an error in words, for a log line.
pub type ControlFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// The local node, as runtimes may change it.
pub trait NodeControl: Send + Sync {
    /// Sets and deletes tags of this node; every member sees the change within the gossip
    /// delay.
    fn update_tags(&self, set: Tags, delete: Vec<String>) -> ControlFuture<'_>;

    /// Sends a user event to the whole cluster.
    fn send_event(&self, name: String, payload: Vec<u8>) -> ControlFuture<'_>;

    /// A directory of the agent's data directory where a runtime keeps what it must find
    /// again after a restart (a Docker deploy's record).
    fn state_dir(&self) -> PathBuf;
}
