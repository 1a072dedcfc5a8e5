//! Hosts as Linux network namespaces on one bridge, and real network faults (partitions,
//! packet loss) made with iptables inside the namespaces. Agents run on a host as on loopback,
//! with the same [`crate::Agent`] at the host's [`crate::Site`] ([`Host::spawn_agent`]).
//!
//! Layout of one [`Net`] named `PREFIX-PID-N` (PID: this test process, N: a per-process
//! counter):
//!
//! ```text
//!   namespace PREFIX-PID-N-sw:  bridge br0, ports p0 .. p(k-1)
//!   namespace PREFIX-PID-N-i:   lo, eth0 = 10.A.B.(11+i)/24, veth peer of p<i>
//! ```
//!
//! The bridge lives in a namespace of its own, so nothing is added to the machine's own
//! network namespace: no interface names to collide with, no host firewall in the way (Docker's
//! `FORWARD DROP` policy would otherwise drop bridged traffic when `br_netfilter` is loaded),
//! and no route from the test hosts to anything but each other (they have no default route, so
//! an agent can only ever reach the addresses this harness created).
//!
//! Faults live in two iptables chains in every host's `INPUT` (for packets arriving on eth0):
//! `rumor-partition` and `rumor-loss` (their rules: `netns/rules.rs`). Dropping on the
//! receiving side only is deliberate: a `DROP` in `OUTPUT` makes the sender's `sendto` fail
//! with `EPERM` at once, which no real network does, whereas a drop in `INPUT` is silent, like
//! a lost packet. Loss with probability `p` in every receiver's `INPUT` is therefore exactly `p`
//! per direction of every link, and a partition drops both directions because each side's
//! `INPUT` drops the other side's source addresses (UDP and TCP alike).
//!
//! [`Net`]'s `Drop` kills whatever still runs in its namespaces (only processes this harness
//! started can be there) and deletes them, which also deletes the veths and the bridge; it runs
//! when a test panics too. Leftovers of crashed earlier runs with the same prefix (namespaces
//! whose owning process is gone) are removed by the first [`Net::new`] of a process.

pub mod cluster;
mod rules;
mod tools;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::agent::{Agent, Site};
use crate::skip_or_fail;
pub use cluster::{CONVERGE, Cluster, check_view, node, warm_up};
pub use rules::{FaultCounters, LOSS_CHAIN, PARTITION_CHAIN};
use rules::{base_rules, loss_rules, parse_counters, partition_blocks, partition_rules};
use tools::{
    clean_stale_once, ip_batch, iptables_restore, iptables_save, prerequisites, remove_namespaces,
};

/// The gossip port of every agent (each host has its own address).
pub const GOSSIP_PORT: u16 = 7946;

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// A bridge and `hosts` network namespaces attached to it. See the module docs.
pub struct Net {
    name: String,
    switch: String,
    hosts: Vec<Host>,
}

/// One namespace on a [`Net`]: its name and address.
#[derive(Debug, Clone)]
pub struct Host {
    index: usize,
    ns: String,
    ip: Ipv4Addr,
}

impl Net {
    /// Creates a bridge and `hosts` namespaces named after `prefix` (1–8 of `[a-z0-9]`, one per
    /// test, so stale namespaces can be traced to their test).
    ///
    /// Returns `None` after [`skip_or_fail`] when this machine cannot do it (not root, `ip` or
    /// `iptables-restore` missing); with `RUMOR_REQUIRE_ALL=1` that is a failure instead. Panics
    /// if the tools are there but setting up the network fails.
    pub fn new(prefix: &str, hosts: usize) -> Option<Net> {
        if let Err(why) = prerequisites() {
            skip_or_fail(&format!("network namespace tests: {why}"));
            return None;
        }
        Some(Net::create(prefix, hosts).unwrap_or_else(|e| panic!("{e}")))
    }

    fn create(prefix: &str, hosts: usize) -> Result<Net, String> {
        check_prefix(prefix)?;
        assert!((1..=200).contains(&hosts), "1..=200 hosts, not {hosts}");
        clean_stale_once(prefix);
        let pid = std::process::id();
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let name = net_name(prefix, pid, n);
        let mut net = Net {
            switch: format!("{name}-sw"),
            hosts: (0..hosts)
                .map(|i| Host {
                    index: i,
                    ns: host_ns(&name, i),
                    ip: host_ip(pid, n, i),
                })
                .collect(),
            name,
        };
        // From here on, Drop removes whatever was created.
        let namespaces: Vec<String> = net.namespaces();
        let result = ip_batch(&[], &netns_add_commands(&namespaces))
            .and_then(|()| ip_batch(&["-n", &net.switch], &switch_commands(&namespaces[1..])))
            .and_then(|()| {
                net.hosts.iter().try_for_each(|h| {
                    ip_batch(&["-n", &h.ns], &host_commands(h.ip))?;
                    iptables_restore(&h.ns, &base_rules(), false)
                })
            });
        if let Err(e) = result {
            net.destroy();
            net.hosts.clear();
            return Err(format!("cannot set up network {}: {e}", net.name));
        }
        eprintln!(
            "net {}: {} hosts on {}.0/24",
            net.name,
            net.hosts.len(),
            subnet_prefix(pid, n)
        );
        Ok(net)
    }

    /// `PREFIX-PID-N`, the start of every namespace name of this network.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Drops all traffic between the hosts of `a` and those of `b`, both directions, UDP and
    /// TCP. Replaces any earlier partition.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let blocked = partition_blocks(self.hosts.len(), a, b);
        for (host, peers) in self.hosts.iter().zip(blocked) {
            let ips: Vec<Ipv4Addr> = peers.iter().map(|&j| self.hosts[j].ip).collect();
            self.restore(host, &partition_rules(&ips));
        }
    }

    /// Drops everything host `i` receives from the hosts in `drops[i]` (UDP and TCP), for
    /// cuts that are not a clean split: one-way partitions, bridges. Replaces any earlier
    /// partition; hosts past the end of `drops` drop nothing.
    pub fn cut(&self, drops: &[Vec<usize>]) {
        for (i, host) in self.hosts.iter().enumerate() {
            let ips: Vec<Ipv4Addr> = drops
                .get(i)
                .into_iter()
                .flatten()
                .map(|&j| self.hosts[j].ip)
                .collect();
            self.restore(host, &partition_rules(&ips));
        }
    }

    /// Drops what hosts `to` receive from hosts `from`, and nothing the other way: `from` can
    /// no longer reach `to`, and TCP between them fails both ways (its answers are lost).
    /// Replaces any earlier partition.
    pub fn one_way(&self, from: &[usize], to: &[usize]) {
        self.cut(&one_way_drops(self.hosts.len(), from, to));
    }

    /// Removes every partition rule.
    pub fn heal(&self) {
        for host in &self.hosts {
            self.restore(host, &partition_rules(&[]));
        }
    }

    /// Drops each packet arriving at any host with probability `p` (0..=1): `p` loss on every
    /// link in each direction. Replaces any earlier loss setting.
    pub fn loss(&self, p: f64) {
        let rules = loss_rules(Some(p));
        for host in &self.hosts {
            self.restore(host, &rules);
        }
    }

    /// Removes the loss rule.
    pub fn clear_loss(&self) {
        for host in &self.hosts {
            self.restore(host, &loss_rules(None));
        }
    }

    /// Packet counters of the fault rules, summed over every host, read from
    /// `iptables-save -c`. Flushing a chain ([`Net::heal`], [`Net::clear_loss`]) resets its
    /// counts, so read them before.
    pub fn counters(&self) -> FaultCounters {
        let mut total = FaultCounters::default();
        for host in &self.hosts {
            let save = iptables_save(&host.ns).unwrap_or_else(|e| panic!("net {}: {e}", self.name));
            total.add(parse_counters(&save));
        }
        total
    }

    fn restore(&self, host: &Host, rules: &str) {
        iptables_restore(&host.ns, rules, true)
            .unwrap_or_else(|e| panic!("net {}: {e}\nrules:\n{rules}", self.name));
    }

    fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch.clone())
            .chain(self.hosts.iter().map(|h| h.ns.clone()))
            .collect()
    }

    fn destroy(&self) {
        remove_namespaces(&self.namespaces());
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

impl Host {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The gossip address agents on this host bind: `IP:7946`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GOSSIP_PORT))
    }

    /// Where an agent on this host runs: in its namespace, on `IP:7946`.
    pub fn site(&self) -> Site {
        Site::Namespace {
            ns: self.ns.clone(),
            ip: self.ip,
            port: GOSSIP_PORT,
        }
    }

    /// Starts `rumor agent --node NAME --bind IP:7946 ...` inside this host's namespace (see
    /// [`Agent::start_at`]).
    pub fn spawn_agent(&self, name: &str, extra: &[&str]) -> Agent {
        Agent::start_at(self.site(), name, extra)
    }
}

// ---- names, addresses and setup commands: pure functions, unit-tested below ----

/// `PREFIX-PID-N`.
fn net_name(prefix: &str, pid: u32, n: u32) -> String {
    format!("{prefix}-{pid}-{n}")
}

fn host_ns(net: &str, i: usize) -> String {
    format!("{net}-{i}")
}

/// The first three octets of a network's /24: `10.(100 + pid % 100).(n % 256)`. Two networks
/// never share a bridge, so a repeat (after 256 networks in one process, or between processes)
/// would not mix their traffic; distinct subnets just make logs unambiguous.
fn subnet_prefix(pid: u32, n: u32) -> String {
    format!("10.{}.{}", 100 + pid % 100, n % 256)
}

fn host_ip(pid: u32, n: u32, i: usize) -> Ipv4Addr {
    let last = u8::try_from(11 + i).expect("at most 200 hosts");
    Ipv4Addr::new(10, (100 + pid % 100) as u8, (n % 256) as u8, last)
}

/// Per host, the hosts it drops so that `from` cannot reach `to`.
fn one_way_drops(hosts: usize, from: &[usize], to: &[usize]) -> Vec<Vec<usize>> {
    for &i in from.iter().chain(to) {
        assert!(i < hosts, "host {i} out of range (network of {hosts})");
    }
    (0..hosts)
        .map(|i| {
            if to.contains(&i) {
                from.to_vec()
            } else {
                Vec::new()
            }
        })
        .collect()
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if (1..=8).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "network prefix {prefix:?}: use 1-8 characters of [a-z0-9]"
        ))
    }
}

/// The process that created namespace `ns` if it is one of `prefix`'s (`PREFIX-PID-...`).
fn owner_pid(prefix: &str, ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(prefix)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

fn netns_add_commands(namespaces: &[String]) -> Vec<String> {
    namespaces
        .iter()
        .map(|ns| format!("netns add {ns}"))
        .collect()
}

/// Run inside the switch namespace: the bridge, and per host a veth whose peer `eth0` goes
/// straight into the host's namespace. Interface names are per namespace, so short fixed ones
/// (≤ 15 bytes) never collide with other tests.
fn switch_commands(host_namespaces: &[String]) -> Vec<String> {
    let mut cmds = vec![
        "link add name br0 type bridge".to_owned(),
        "link set br0 up".to_owned(),
    ];
    cmds.extend(host_namespaces.iter().enumerate().flat_map(|(i, ns)| {
        [
            format!("link add name p{i} type veth peer name eth0 netns {ns}"),
            format!("link set p{i} master br0 up"),
        ]
    }));
    cmds
}

/// Run inside a host namespace.
fn host_commands(ip: Ipv4Addr) -> Vec<String> {
    vec![
        "link set lo up".to_owned(),
        "link set eth0 up".to_owned(),
        format!("addr add {ip}/24 dev eth0"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_trace_back_to_their_process() {
        let net = net_name("rfpart", 4_194_304, 7);
        assert_eq!(net, "rfpart-4194304-7");
        let host = host_ns(&net, 5);
        assert_eq!(owner_pid("rfpart", &host), Some(4_194_304));
        assert_eq!(owner_pid("rfpart", &format!("{net}-sw")), Some(4_194_304));
        assert_eq!(owner_pid("rf", &host), None, "another prefix's namespace");
        assert_eq!(owner_pid("rfpart", "rfpartx-1-2-3"), None);
        assert!(check_prefix("rfloss").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("Upper").is_err());
        assert!(check_prefix("has-dash").is_err());
        assert!(check_prefix("ninechars").is_err());
        // Interface names are fixed per namespace and within Linux's 15 bytes.
        let hosts: Vec<String> = (0..200).map(|i| host_ns(&net, i)).collect();
        for cmd in switch_commands(&hosts) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            for pair in words.windows(2) {
                if pair[0] == "name" {
                    assert!(pair[1].len() <= 15, "interface name {}", pair[1]);
                }
            }
        }
    }

    #[test]
    fn addresses_are_private_and_distinct_per_host_and_network() {
        let a = host_ip(1234, 0, 0);
        assert!(a.is_private(), "{a}");
        assert_eq!(a, Ipv4Addr::new(10, 134, 0, 11));
        assert_eq!(host_ip(1234, 0, 199), Ipv4Addr::new(10, 134, 0, 210));
        assert_ne!(host_ip(1234, 1, 0), a, "another network of this process");
        assert_eq!(subnet_prefix(1234, 1), "10.134.1");
        assert_eq!(host_commands(a)[2], "addr add 10.134.0.11/24 dev eth0");
    }

    #[test]
    fn one_way_cuts_drop_on_the_receiving_side_only() {
        let d = one_way_drops(4, &[0], &[2, 3]);
        assert_eq!(d, [vec![], vec![], vec![0], vec![0]]);
    }

    #[test]
    fn setup_commands() {
        assert_eq!(
            netns_add_commands(&["x-1-0-sw".into(), "x-1-0-0".into()]),
            ["netns add x-1-0-sw", "netns add x-1-0-0"]
        );
        let sw = switch_commands(&["x-1-0-0".into(), "x-1-0-1".into()]);
        assert_eq!(sw[0], "link add name br0 type bridge");
        assert_eq!(
            sw[2],
            "link add name p0 type veth peer name eth0 netns x-1-0-0"
        );
        assert_eq!(sw[5], "link set p1 master br0 up");
    }
}
