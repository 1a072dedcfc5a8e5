//! The DNS interface: every agent answers for the cluster's members and tags as DNS names
//! (`web.role.tag.rumor`, `db1.node.rumor`), so tools that only know how to look up a name
//! follow the fleet with no file and no central server. `docs/dns.md` is the user's page.
//!
//! # Why
//! A load balancer's upstreams, a database URL, `ssh`: they resolve names. An agent already
//! knows which members are alive and passing their checks; serving that as DNS needs no other
//! moving part. Consul users' recurring complaints are answered here: several tags in one
//! name (pairs chain as AND), truncation that says so (TC, then TCP gives it all), and an SOA
//! with every negative answer so resolvers cache it for a bounded time.
//!
//! # How
//! - `zone.rs`: the cluster publishes its member list on a watch channel; each version becomes
//!   a read-only [`zone::Zone`] swapped in whole. A query never waits on the gossip thread.
//! - `labels.rs`: the one rule from free-text names and tags to DNS labels.
//! - `names.rs`: what a query name asks for; `answer.rs`: the answer, pure.
//! - `respond.rs`: packet in, packet out, with hickory's decoder, builder and encoder; anything
//!   that is not a query is dropped and counted.
//! - `server.rs`: the UDP socket and the TCP listener; `stats.rs`: the counters `/metrics` shows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hickory_server::proto::rr::Name;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::MemberList;

mod answer;
mod labels;
mod names;
mod respond;
mod server;
mod stats;
mod zone;

pub use labels::to_label;
pub use respond::{MAX_UDP_ANSWER, Transport, respond};
pub use server::{MAX_TCP_CONNECTIONS, TCP_IDLE};
pub use stats::DnsStats;
pub use zone::Zone;

/// Default `dns_domain`.
pub const DEFAULT_DOMAIN: &str = "rumor";

/// The DNS settings of `rumor agent` (`--dns`, `--dns-domain`, ...; see docs/dns.md).
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// Where to serve UDP and TCP.
    pub addr: SocketAddr,
    /// The domain answered for, without a trailing dot: `rumor`, `cluster.example`.
    pub domain: String,
    /// TTL of every answer (whole seconds).
    pub ttl: Duration,
    /// The SOA's minimum TTL: how long resolvers cache NXDOMAIN and NODATA answers.
    pub soa_min_ttl: Duration,
    /// Also answer PTR under in-addr.arpa and ip6.arpa for the members' addresses.
    pub reverse: bool,
}

/// What an answer is computed with, checked and converted once at start.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The domain, lowercase and fully qualified.
    pub domain: Name,
    pub ttl: u32,
    pub soa_min_ttl: u32,
    pub reverse: bool,
    /// The SOA's primary server and the apex's NS: this node's name, or `ns.DOMAIN` when the
    /// node name has no label.
    pub server_name: Name,
}

impl DnsSettings {
    /// The settings for `config` on node `local`.
    pub fn new(config: &DnsConfig, local: &str) -> anyhow::Result<DnsSettings> {
        let domain = parse_domain(&config.domain)?;
        let seconds = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let mut settings = DnsSettings {
            server_name: Name::root(),
            domain,
            ttl: seconds(config.ttl),
            soa_min_ttl: seconds(config.soa_min_ttl),
            reverse: config.reverse,
        };
        settings.server_name = to_label(local)
            .and_then(|l| settings.node_name(&l))
            .or_else(|| {
                Name::from_ascii("ns")
                    .ok()?
                    .append_name(&settings.domain)
                    .ok()
            })
            .context("the DNS domain is too long to hold a server name")?;
        Ok(settings)
    }

    /// `LABEL.node.DOMAIN`, or `None` when that name is over DNS's 255 bytes.
    pub fn node_name(&self, label: &str) -> Option<Name> {
        Name::from_labels([label, "node"])
            .ok()?
            .append_name(&self.domain)
            .ok()
    }
}

/// `domain` as a fully qualified, lowercase name: one or more labels, no empty one.
pub fn parse_domain(domain: &str) -> anyhow::Result<Name> {
    let trimmed = domain.trim_end_matches('.');
    let name = Name::from_ascii(format!("{trimmed}."))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("invalid DNS domain {domain:?}"))?;
    anyhow::ensure!(
        !trimmed.is_empty() && name.num_labels() >= 1,
        "invalid DNS domain {domain:?}: give one or more labels, e.g. rumor or cluster.example"
    );
    Ok(name.to_lowercase())
}

/// A running DNS server: stopped when dropped.
pub struct DnsServer {
    listeners: server::Listeners,
    publisher: JoinHandle<()>,
    pub stats: Arc<DnsStats>,
}

impl DnsServer {
    /// Where it serves (the port chosen, when the configuration said 0).
    pub fn addr(&self) -> SocketAddr {
        self.listeners.addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.publisher.abort();
    }
}

/// Serves `config` from the member lists `members` publishes; fails when the address cannot be
/// bound.
pub async fn start(
    config: &DnsConfig,
    local: &str,
    members: watch::Receiver<MemberList>,
) -> anyhow::Result<DnsServer> {
    let settings = DnsSettings::new(config, local)?;
    let stats = Arc::new(DnsStats::default());
    let (zone_tx, zone_rx) = watch::channel(Arc::new(Zone::default()));
    let publisher = tokio::spawn(zone::keep_published(members, zone_tx, stats.clone()));
    let listeners = server::bind(config.addr, zone_rx, settings, stats.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve DNS on {} (UDP and TCP); choose another address with --dns",
                config.addr
            )
        })?;
    Ok(DnsServer {
        listeners,
        publisher,
        stats,
    })
}

#[cfg(test)]
mod tests;
