//! Who a node is on the wire: name, advertised address, and a generation that is new on every
//! process start, so a restarted node is a new incarnation that replaces its dead self.

use std::fmt;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest node name accepted, in bytes. Identities ride in every packet header (twice), so
/// this bounds the header and with it the room left for events in one UDP packet.
pub const MAX_NODE_NAME: usize = 64;

/// A member's identity as foca sees it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub generation: u64,
}

impl NodeId {
    /// An identity for a process starting now: its generation is the current time in
    /// microseconds, so it is higher than that of any earlier run of the same node.
    pub fn starting_now(name: String, addr: SocketAddr) -> Self {
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(1);
        NodeId {
            name,
            addr,
            generation,
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.generation)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl foca::Identity for NodeId {
    /// One member per socket address: a new process on the same address replaces the old one.
    type Addr = SocketAddr;

    /// After being declared down, come back as the next generation (foca then rejoins by
    /// itself and tells the cluster, instead of going defunct).
    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            generation: self.generation.checked_add(1)?,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The newer generation wins; on a tie (two processes claiming the same identity) the
    /// name breaks it so every node decides the same way.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.name) > (adversary.generation, &adversary.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(name: &str, generation: u64) -> NodeId {
        NodeId {
            name: name.into(),
            addr: "127.0.0.1:7946".parse().unwrap(),
            generation,
        }
    }

    #[test]
    fn renewed_identity_wins_the_conflict_with_its_old_self() {
        let old = id("a", 5);
        let new = old.renew().unwrap();
        assert_eq!(new.generation, 6);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn a_restart_gets_a_higher_generation() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let first = NodeId::starting_now("a".into(), addr);
        std::thread::sleep(std::time::Duration::from_micros(2));
        let second = NodeId::starting_now("a".into(), addr);
        assert!(second.generation > first.generation);
        assert!(second.win_addr_conflict(&first));
    }
}
