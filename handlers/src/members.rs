//! The cluster's members as runtimes see them: a read-only list ([`Members`]) the agent
//! publishes through the dispatcher on every change
//! ([`Dispatcher::set_members`](crate::Dispatcher::set_members)).
//!
//! A template renders the cluster as it is, not the event that woke it: the members here are
//! every member the local agent knows, itself included, with their status, so a template can
//! choose (`alive` members whose `role` is `web`). This crate does not import the cluster: the
//! agent builds these from its own member list.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::Tags;

/// One member, as a template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Its IP address (the port is separate, as in Serf).
    pub address: IpAddr,
    /// Its gossip port.
    pub port: u16,
    pub status: MemberStatus,
    pub tags: Tags,
    /// Bumped on every restart of the member's agent.
    pub generation: u64,
    /// Alive, and every health check it publishes (tags `health_*`) passing: a member to send
    /// traffic to. The agent computes it, by the one rule DNS and the checks share.
    #[serde(default)]
    pub passing: bool,
}

/// Whether a member is alive, on its way out, gone gracefully, or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    Alive,
    Leaving,
    Left,
    Failed,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every member the local agent knows, itself included, sorted by name. Shared, never
/// changed: a new list is published on every change.
pub type Members = Arc<Vec<Member>>;
