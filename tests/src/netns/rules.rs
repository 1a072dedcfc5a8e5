//! The iptables rules that make the faults, and the packet counts read back from them.
//!
//! Every host's filter table has two chains jumped to from `INPUT` for packets arriving on
//! eth0: [`PARTITION_CHAIN`] (a DROP per source address on the other side of a cut) and
//! [`LOSS_CHAIN`] (one random DROP). Each is replaced as a whole with `iptables-restore
//! --noflush`, so setting a partition or a loss rate never touches the other. Pure functions of
//! text, tested without a namespace.

use std::net::Ipv4Addr;

/// The iptables chain holding partition rules, jumped to from `INPUT` for eth0.
pub const PARTITION_CHAIN: &str = "rumor-partition";

/// The iptables chain holding the loss rule, jumped to from `INPUT` for eth0.
pub const LOSS_CHAIN: &str = "rumor-loss";

/// What the fault rules did, in packets (see [`super::Net::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Packets that arrived on eth0 past the partition rules (the loss rule's candidates).
    pub arrived: u64,
    /// Packets the loss rule dropped.
    pub lost: u64,
    /// Packets the partition rules dropped.
    pub cut: u64,
}

impl FaultCounters {
    pub(super) fn add(&mut self, other: FaultCounters) {
        self.arrived += other.arrived;
        self.lost += other.lost;
        self.cut += other.cut;
    }

    /// `lost / arrived`, the loss rate actually applied.
    pub fn loss_rate(&self) -> f64 {
        if self.arrived == 0 {
            0.0
        } else {
            self.lost as f64 / self.arrived as f64
        }
    }
}

/// The filter table of a fresh host: the two fault chains, jumped to for packets from eth0.
pub(super) fn base_rules() -> String {
    format!(
        "*filter\n:{PARTITION_CHAIN} - [0:0]\n:{LOSS_CHAIN} - [0:0]\n\
         -A INPUT -i eth0 -j {PARTITION_CHAIN}\n-A INPUT -i eth0 -j {LOSS_CHAIN}\nCOMMIT\n"
    )
}

/// Replaces the partition chain with a DROP per blocked source address.
pub(super) fn partition_rules(blocked: &[Ipv4Addr]) -> String {
    let mut rules = format!("*filter\n-F {PARTITION_CHAIN}\n");
    for ip in blocked {
        rules.push_str(&format!("-A {PARTITION_CHAIN} -s {ip}/32 -j DROP\n"));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Replaces the loss chain with one random DROP of probability `p`, or nothing.
pub(super) fn loss_rules(p: Option<f64>) -> String {
    let mut rules = format!("*filter\n-F {LOSS_CHAIN}\n");
    if let Some(p) = p {
        assert!(
            (0.0..=1.0).contains(&p),
            "loss probability {p} not in 0..=1"
        );
        rules.push_str(&format!(
            "-A {LOSS_CHAIN} -m statistic --mode random --probability {p} -j DROP\n"
        ));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Sums the packet counts of `iptables-save -c` lines (`[PACKETS:BYTES] -A CHAIN ...`) for
/// the fault rules.
pub(super) fn parse_counters(save: &str) -> FaultCounters {
    let mut c = FaultCounters::default();
    for line in save.lines() {
        let Some((count, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        let packets: u64 = count
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if rule.starts_with("-A INPUT ") && rule.ends_with(&format!("-j {LOSS_CHAIN}")) {
            c.arrived += packets;
        } else if rule.starts_with(&format!("-A {LOSS_CHAIN} ")) && rule.ends_with("-j DROP") {
            c.lost += packets;
        } else if rule.starts_with(&format!("-A {PARTITION_CHAIN} ")) && rule.ends_with("-j DROP") {
            c.cut += packets;
        }
    }
    c
}

/// For each of `hosts` hosts, the hosts whose packets it must drop to split `a` from `b`.
pub(super) fn partition_blocks(hosts: usize, a: &[usize], b: &[usize]) -> Vec<Vec<usize>> {
    for &i in a.iter().chain(b) {
        assert!(i < hosts, "host {i} out of range (network of {hosts})");
    }
    assert!(
        a.iter().all(|i| !b.contains(i)),
        "partition sides overlap: {a:?} / {b:?}"
    );
    (0..hosts)
        .map(|i| {
            if a.contains(&i) {
                b.to_vec()
            } else if b.contains(&i) {
                a.to_vec()
            } else {
                Vec::new()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let base = base_rules();
        assert!(base.contains(":rumor-partition - [0:0]\n"), "{base}");
        assert!(base.contains("-A INPUT -i eth0 -j rumor-loss\n"), "{base}");
        assert!(base.ends_with("COMMIT\n"));
        let p = partition_rules(&[Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(10, 1, 2, 4)]);
        assert_eq!(
            p,
            "*filter\n-F rumor-partition\n-A rumor-partition -s 10.1.2.3/32 -j DROP\n\
             -A rumor-partition -s 10.1.2.4/32 -j DROP\nCOMMIT\n"
        );
        assert_eq!(
            partition_rules(&[]),
            "*filter\n-F rumor-partition\nCOMMIT\n"
        );
        assert_eq!(
            loss_rules(Some(0.1)),
            "*filter\n-F rumor-loss\n-A rumor-loss -m statistic --mode random \
             --probability 0.1 -j DROP\nCOMMIT\n"
        );
        assert_eq!(loss_rules(None), "*filter\n-F rumor-loss\nCOMMIT\n");
    }

    #[test]
    fn counters_from_iptables_save() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:rumor-loss - [0:0]\n\
            [120:9000] -A INPUT -i eth0 -j rumor-partition\n\
            [100:8000] -A INPUT -i eth0 -j rumor-loss\n\
            [20:1000] -A rumor-partition -s 10.1.2.3/32 -j DROP\n\
            [11:700] -A rumor-loss -m statistic --mode random --probability 0.10000000009 -j DROP\n\
            COMMIT\n";
        let c = parse_counters(save);
        assert_eq!(
            c,
            FaultCounters {
                arrived: 100,
                lost: 11,
                cut: 20
            }
        );
        assert!((c.loss_rate() - 0.11).abs() < 1e-9);
        assert_eq!(FaultCounters::default().loss_rate(), 0.0);
    }

    #[test]
    fn partition_blocks_both_directions_and_spares_bystanders() {
        let b = partition_blocks(7, &[0, 1, 2], &[3, 4, 5]);
        assert_eq!(b[0], [3, 4, 5]);
        assert_eq!(b[4], [0, 1, 2]);
        assert!(b[6].is_empty());
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn overlapping_sides_are_refused() {
        partition_blocks(4, &[0, 1], &[1, 2]);
    }
}
