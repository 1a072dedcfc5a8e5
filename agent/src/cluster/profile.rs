//! Timing profiles in the spirit of Serf's `lan`, `wan` and `local`.

use std::num::NonZeroU32;
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
        // never got an event by gossip (1 in ~35 events in the benchmark). Twice the budget
        // costs a few packets per event and nothing at idle.
        config.max_transmissions = config
            .max_transmissions
            .saturating_mul(std::num::NonZeroU8::new(2).expect("2 is not zero"));
        config
    }

    fn base_foca_config(self, members: usize) -> foca::Config {
        let n = NonZeroU32::new(u32::try_from(members.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        match self {
            Profile::Lan => {
                let mut c = foca::Config::new_lan(n);
                // foca announces to down members every 65 s by default; a healed partition
                // should re-merge well within a minute.
                if let Some(a) = c.periodic_announce_to_down_members.as_mut() {
                    a.frequency = Duration::from_secs(15);
                }
                c
            }
            Profile::Wan => foca::Config::new_wan(n),
            Profile::Local => {
                let mut c = foca::Config::new_lan(n);
                c.probe_period = Duration::from_millis(200);
                c.probe_rtt = Duration::from_millis(100);
                // Suspicion scales with log10(n) like foca's own profiles, over a 200 ms period.
                let log_n = f64::max(1.0, f64::from(n.get()).log10());
                c.suspect_to_down_after = Duration::from_secs_f64(log_n * 4.0 * 0.2);
                if let Some(g) = c.periodic_gossip.as_mut() {
                    g.frequency = Duration::from_millis(100);
                }
                if let Some(a) = c.periodic_announce.as_mut() {
                    a.frequency = Duration::from_secs(5);
                }
                if let Some(a) = c.periodic_announce_to_down_members.as_mut() {
                    a.frequency = Duration::from_secs(5);
                }
                c
            }
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
        const THRESHOLD: f64 = 32.0;
        let n = members as f64;
        if n <= THRESHOLD {
            return base;
        }
        let scale = ((n.log2() - THRESHOLD.log2()).ceil() + 1.0) as u32;
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
        let scale = ((members as f64) + 1.0).log10().ceil().max(1.0) as u32;
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

#[cfg(test)]
mod tests {
    use super::*;

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
