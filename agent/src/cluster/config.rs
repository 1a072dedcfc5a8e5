//! What the cluster needs to start: the agent resolves this from flags, env and the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rumor_handlers::event::Tags;

use super::keyring::Keyring;
use super::node::events::Retention;
use super::profile::Profile;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name (unique in the cluster).
    pub node: String,
    /// Where to listen, UDP (gossip) and TCP (push-pull) on the same port.
    pub bind: SocketAddr,
    /// The address other members use to reach us. Port 0 means "the port we bound".
    pub advertise: SocketAddr,
    pub profile: Profile,
    pub tags: Tags,
    /// Addresses to rejoin through whenever cut off (in addition to known members).
    pub join: Vec<String>,
    /// Addresses tried in the background, with backoff, until one answers.
    pub retry_join: Vec<String>,
    /// Limit on user event (and query) name + payload, in bytes.
    pub max_event_bytes: usize,
    /// Limit on one query answer, in bytes; longer answers are cut with a marker.
    pub max_response_bytes: usize,
    /// How long a failed member stays listed before it is reaped.
    pub reconnect_timeout: Duration,
    /// How long a left member stays listed before it is reaped.
    pub tombstone_timeout: Duration,
    /// Encryption keys (`None`: gossip in the clear).
    pub keyring: Option<Keyring>,
    /// Where key changes (`rumor keys`) are persisted.
    pub keyring_file: Option<PathBuf>,
    /// Where the node records members and clocks, so a restart rejoins on its own.
    pub snapshot_file: Option<PathBuf>,
    /// Rejoin the snapshot's members on start even after a graceful leave.
    pub rejoin_after_leave: bool,
    /// Largest cluster (members besides ourselves) our own user events and queries are sent
    /// to every member directly; larger ones use the broadcast tree. Normally
    /// [`plumtree::DIRECT_LIMIT`](super::plumtree::DIRECT_LIMIT); 0 always uses the tree.
    pub direct_push_limit: usize,
    /// How many user events, and for how long, a node keeps for peers that missed them (a
    /// partition, a restart): what an exchange can still supply.
    pub event_retention: Retention,
}
