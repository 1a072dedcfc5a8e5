//! Timing profiles in the spirit of Serf's `lan`, `wan` and `local`.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How fast the cluster probes, gossips and gives up on silent members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Hosts on one local network: probe every 1 s, failure declared after a few seconds.
    #[default]
    Lan,
    /// Hosts across data centres: probe every 5 s, generous timeouts.
    Wan,
    /// Agents on one machine (tests, `--dev`): probe every 200 ms, fast failure detection.
    Local,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Wan => "wan",
            Profile::Local => "local",
        }
    }

    /// foca's configuration for a cluster of `members` live nodes under this profile.
    ///
    /// Only the size-dependent parts (transmissions, suspicion time) change with `members`, so
    /// the result can always be passed to `Foca::set_config` as the cluster grows.
    pub fn foca_config(self, members: usize) -> foca::Config {
        let mut config = self.base_foca_config(members);
        // foca passes each update and broadcast on 4·log10(n+1) times (6 at 50 nodes); with
        // the eager relay spending a third of that at once, some nodes of a 50-node cluster
        // never got an update by gossip. Twice the budget costs a few packets per update and
        // nothing at idle.
        config.max_transmissions = config
            .max_transmissions
            .saturating_mul(std::num::NonZeroU8::new(2).expect("2 is not zero"));
        config
    }

    /// foca's `Config::new_lan` / `new_wan` (memberlist's default LAN and WAN settings),
    /// written out, plus `local`. Written out because foca computes them with the C library's
    /// `log10`, and that call, with two of ours, was all the agent loaded `libm.so` for: a
    /// library mapped into every agent's resident memory.
    fn base_foca_config(self, members: usize) -> foca::Config {
        let periodic = |millis: u64, members: usize| {
            Some(foca::PeriodicParams {
                frequency: Duration::from_millis(millis),
                num_members: NonZeroUsize::new(members).expect("not zero"),
            })
        };
        // Probe period and round trip, suspicion in probe periods per log10(n), and the
        // periodic announce, announce to down members and gossip, as (every ms, to members).
        let (probe, rtt, suspicion, announce, announce_down, gossip) = match self {
            // foca announces to down members every 65 s; a healed partition should re-merge
            // well within a minute.
            Profile::Lan => (1000, 500, 4.0, (30_000, 1), (15_000, 2), (200, 3)),
            Profile::Wan => (5000, 3000, 6.0, (60_000, 2), (125_000, 3), (500, 4)),
            Profile::Local => (200, 100, 4.0, (5000, 1), (5000, 2), (100, 3)),
        };
        let probe_period = Duration::from_millis(probe);
        foca::Config {
            probe_period,
            probe_rtt: Duration::from_millis(rtt),
            num_indirect_probes: NonZeroUsize::new(3).expect("not zero"),
            max_transmissions: max_transmissions(members),
            // foca's rule: max(1, log10 n) × multiplier probe periods.
            suspect_to_down_after: Duration::from_secs_f64(
                libm::fmax(1.0, libm::log10(members.max(1) as f64))
                    * suspicion
                    * probe_period.as_secs_f64(),
            ),
            remove_down_after: Some(Duration::from_secs(24 * 60 * 60)),
            max_packet_size: NonZeroUsize::new(1400).expect("not zero"),
            notify_down_members: true,
            periodic_announce: periodic(announce.0, announce.1),
            periodic_announce_to_down_members: periodic(announce_down.0, announce_down.1),
            periodic_gossip: periodic(gossip.0, gossip.1),
        }
    }

    /// How often a node exchanges full state with a random peer over TCP, for a cluster of
    /// `members`. Like memberlist, the interval grows past 32 members (×2 up to 64, ×3 up to
    /// 128, ...): every node does one exchange per interval, so the cluster's total stays
    /// bounded while each node still catches up within minutes.
    pub fn push_pull_interval(self, members: usize) -> Duration {
        let base = match self {
            Profile::Lan => Duration::from_secs(30),
            Profile::Wan => Duration::from_secs(60),
            Profile::Local => Duration::from_secs(5),
        };
        // ×1 up to 32 members, then one more for each doubling: ⌈log2(n / 32)⌉ + 1.
        const THRESHOLD: usize = 32;
        if members <= THRESHOLD {
            return base;
        }
        let scale = ceil_log2(members) - THRESHOLD.ilog2() + 1;
        base * scale
    }

    /// Default time a query waits for answers, for a cluster of `members` (Serf's rule:
    /// gossip interval × 16 × ⌈log10(n + 1)⌉).
    pub fn query_timeout(self, members: usize) -> Duration {
        let base = match self {
            Profile::Lan => Duration::from_millis(3200),
            Profile::Wan => Duration::from_secs(8),
            Profile::Local => Duration::from_millis(1600),
        };
        let scale = ceil_log10(members + 1).max(1);
        base * scale
    }

    /// How often a node sends its heartbeat to the next member on the ring (see heartbeat.rs):
    /// once per SWIM probe period, so a crashed agent is noticed within one.
    pub fn heartbeat_interval(self) -> Duration {
        self.foca_config(1).probe_period
    }

    /// How often a node tries to reach one failed member again (a push-pull with it), so a
    /// healed partition re-merges, and catches up on events, without operator action.
    pub fn reconnect_interval(self) -> Duration {
        match self {
            Profile::Lan => Duration::from_secs(10),
            Profile::Wan => Duration::from_secs(30),
            Profile::Local => Duration::from_secs(2),
        }
    }

    /// Time between the pings a member sends to a suspect to confirm a suspicion (three of
    /// them, then it reports). 100 ms is a hundred LAN round trips, and also covers the
    /// scheduling hiccups of a loaded machine running many `local` agents.
    pub fn confirm_ping_interval(self) -> Duration {
        match self {
            Profile::Lan | Profile::Local => Duration::from_millis(100),
            Profile::Wan => Duration::from_millis(500),
        }
    }

    /// When a query's asker first asks the nodes that have not answered again, straight to
    /// them (then after twice as long each time, until the timeout): long enough for shell
    /// handlers to have answered, short next to a query timeout.
    pub fn query_reask_first(self) -> Duration {
        match self {
            Profile::Lan | Profile::Local => Duration::from_millis(250),
            Profile::Wan => Duration::from_secs(1),
        }
    }

    /// How long a user event or query announced by a lazy peer of the broadcast tree may take
    /// to arrive by the tree before it is asked for (then half as long for each further
    /// announcer). Tree delivery takes a few milliseconds on a LAN; 100 ms leaves room for a
    /// loaded host without making a lost packet cost much.
    pub fn tree_graft_timeout(self) -> Duration {
        match self {
            Profile::Lan | Profile::Local => Duration::from_millis(100),
            Profile::Wan => Duration::from_millis(500),
        }
    }

    /// Timeout for one TCP push-pull exchange (connect, send, receive).
    pub fn push_pull_timeout(self) -> Duration {
        match self {
            Profile::Lan | Profile::Local => Duration::from_secs(5),
            Profile::Wan => Duration::from_secs(10),
        }
    }
}

/// foca's rule for how many times an update is passed on: ⌊4·log10(n + 1)⌋, at least 1. In
/// integers: ⌊log10(x⁴)⌋ is the number of decimal digits of x⁴, less one.
fn max_transmissions(members: usize) -> NonZeroU8 {
    let x = (members as u128).min(1_000_000_000) + 1;
    let tx = (x * x * x * x).ilog10().clamp(1, u32::from(u8::MAX));
    NonZeroU8::new(tx as u8).expect("at least 1")
}

/// ⌈log2 n⌉ for n ≥ 1.
fn ceil_log2(n: usize) -> u32 {
    if n <= 1 { 0 } else { (n - 1).ilog2() + 1 }
}

/// ⌈log10 n⌉ for n ≥ 1.
fn ceil_log10(n: usize) -> u32 {
    if n <= 1 { 0 } else { (n - 1).ilog10() + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The integer forms agree with the floating-point rules they replace.
    #[test]
    fn integer_logarithms_match_the_float_rules() {
        for n in 1..=20_000usize {
            let x = n as f64;
            let foca_tx = ((x + 1.0).log10() * 4.0).max(1.0) as u32;
            assert_eq!(u32::from(max_transmissions(n).get()), foca_tx, "{n}");
            assert_eq!(ceil_log2(n), x.log2().ceil() as u32, "{n}");
            assert_eq!(ceil_log10(n), x.log10().ceil() as u32, "{n}");
        }
    }

    #[test]
    fn written_out_configs_are_focas() {
        for n in [1u32, 2, 5, 50, 999, 10_000] {
            let size = std::num::NonZeroU32::new(n).unwrap();
            let ours = Profile::Wan.base_foca_config(n as usize);
            let theirs = foca::Config::new_wan(size);
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "wan, {n}");
            let ours = Profile::Lan.base_foca_config(n as usize);
            let mut theirs = foca::Config::new_lan(size);
            theirs
                .periodic_announce_to_down_members
                .as_mut()
                .unwrap()
                .frequency = Duration::from_secs(15);
            assert_eq!(format!("{ours:?}"), format!("{theirs:?}"), "lan, {n}");
        }
    }

    #[test]
    fn push_pull_slows_down_as_the_cluster_grows() {
        let lan = Profile::Lan;
        assert_eq!(lan.push_pull_interval(5), Duration::from_secs(30));
        assert_eq!(lan.push_pull_interval(32), Duration::from_secs(30));
        assert_eq!(lan.push_pull_interval(50), Duration::from_secs(60));
        assert_eq!(lan.push_pull_interval(128), Duration::from_secs(90));
    }

    #[test]
    fn configs_can_replace_each_other_as_the_cluster_grows() {
        for profile in [Profile::Lan, Profile::Wan, Profile::Local] {
            let small = profile.foca_config(1);
            let large = profile.foca_config(5000);
            assert!(large.max_transmissions > small.max_transmissions);
            assert_eq!(small.probe_period, large.probe_period);
            assert_eq!(small.probe_rtt, large.probe_rtt);
        }
        assert_eq!(Profile::Lan.foca_config(50).max_transmissions.get(), 12);
    }
}
