//! Errors the cluster reports to its callers (control API, CLI).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("the agent is shutting down")]
    Stopped,
    #[error(
        "event too large: name + payload is {size} bytes, the limit is {limit} bytes (max_event_bytes)"
    )]
    EventTooLarge { size: usize, limit: usize },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid tags: {0}")]
    InvalidTags(String),
    #[error("no member named {0:?}")]
    UnknownMember(String),
    #[error("member {0:?} is alive: force-leave only applies to failed members")]
    MemberAlive(String),
    #[error("could not join any address: {0}")]
    JoinFailed(String),
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error(
        "query too large: it encodes to {size} bytes, the limit is {limit} bytes; shorten the payload or the node filter"
    )]
    QueryTooLarge { size: usize, limit: usize },
}
