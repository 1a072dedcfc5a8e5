//! The heartbeat ring: every probe period each node sends one small packet, which nobody
//! answers, to the next member in name order (the last to the first).
//!
//! Why: when an agent crashes on a host that stays up, its host refuses the next packet sent
//! to its port, and that refusal starts the suspicion (see `refused.rs`). Without the ring the
//! next packet is the next SWIM probe, and with every member probing one random member per
//! period, a given member can go unprobed for several periods (the benchmark's failure
//! detection had such a tail; see `docs/performance.md`). On the ring every
//! member gets exactly one packet a period, so a crashed agent is noticed within one probe
//! period (1 s on `lan`). The cost is one header-sized packet per node and period, with no
//! answer. A host that goes silent altogether refuses nothing; SWIM's probes find it.
//!
//! Views of the membership can differ for a moment (a join spreading); a member may then get
//! two heartbeats in a period, or none, which SWIM's probes still cover.

/// The member after `local` in name order (wrapping around), among `members` (the live
/// members other than `local`, in any order, as name and address). `None` when alone.
pub fn successor<'a, A: Copy>(
    local: &str,
    members: impl IntoIterator<Item = (&'a str, A)>,
) -> Option<A> {
    let mut next: Option<(&str, A)> = None;
    let mut first: Option<(&str, A)> = None;
    for (name, addr) in members {
        if name > local && next.is_none_or(|(n, _)| name < n) {
            next = Some((name, addr));
        }
        if first.is_none_or(|(n, _)| name < n) {
            first = Some((name, addr));
        }
    }
    next.or(first).map(|(_, addr)| addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_name_up_or_the_first_after_the_last() {
        let members = [("c", 3), ("a", 1), ("d", 4)];
        assert_eq!(successor("b", members), Some(3));
        assert_eq!(successor("c", [("a", 1), ("d", 4)]), Some(4));
        assert_eq!(successor("e", members), Some(1), "wraps around");
        assert_eq!(successor("a", [("a2", 9)]), Some(9));
        assert_eq!(successor("solo", std::iter::empty::<(&str, u8)>()), None);
    }

    #[test]
    fn every_member_of_a_ring_gets_exactly_one_heartbeat() {
        let names: Vec<String> = (0..50).map(|i| format!("node-{i}")).collect();
        let mut received = vec![0; names.len()];
        for (i, me) in names.iter().enumerate() {
            let others = names
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, n)| (n.as_str(), j));
            received[successor(me, others).unwrap()] += 1;
        }
        assert!(received.iter().all(|&n| n == 1), "{received:?}");
    }
}
