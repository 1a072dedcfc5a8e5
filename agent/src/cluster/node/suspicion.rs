//! Fast failure detection that stays quiet under packet loss: a suspicion confirmed by
//! independent members.
//!
//! foca declares a suspect member down only when a fixed time has passed without a refutation
//! (4·log10(n) probe periods: 6.8 s at 50 nodes on `lan`). Making that time short would
//! declare members down whenever one probe and its indirect probes were unlucky. So the time
//! stays, and a second, faster path is added in the spirit of Lifeguard's suspicion
//! confirmations:
//!
//! 1. When our own probe of a member fails (foca's `ProbeFailed`), or its host refuses a
//!    packet of ours because its agent is gone (refused.rs), we broadcast a
//!    [`SuspectReport`], relayed eagerly like any broadcast.
//! 2. A node that hears another's report pings the suspect directly, with a few retries
//!    (each hearer with a probability chosen so that about [`PROBERS`] do). No answer, or a
//!    refused ping: it reports too.
//! 3. Once [`needed`] distinct members report the same incarnation, every node that counted
//!    them declares the member down at once — unless it has seen a refutation (a higher
//!    incarnation) by then.
//!
//! A dead member is thus declared down a fraction of a second after the first failed probe.
//! A live one is declared down only if several independent probers all failed to reach it,
//! each over several packets, before it refuted — at 10 % loss per direction that is a few in
//! a million per suspicion. The suspect itself, hearing a report about itself, refutes at once
//! (see the actor) rather than waiting for foca's gossip to bring it the suspicion.
//!
//! This module is the bookkeeping; the actor sends the pings and applies the verdicts.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::identity::NodeId;
use super::message::SuspectReport;

/// About this many members confirm a suspicion by pinging the suspect themselves. Each
/// hearer decides alone, so the count varies: with 4, too many suspicions got fewer than the
/// two confirmations a dead member needs and waited for more failed probes; with 6, few do
/// (see `docs/performance.md`).
pub const PROBERS: f64 = 6.0;
/// Pings a confirming member sends before it reports the suspect.
pub const PINGS: u8 = 3;
/// A suspicion that was neither confirmed nor refuted is forgotten after this long (foca's
/// own timer has decided it by then).
const FORGET_AFTER: Duration = Duration::from_secs(120);
/// Most suspicions tracked at once: reports about members nobody knows cannot grow the table
/// without bound.
const MAX_CASES: usize = 4096;

/// Distinct reporters that confirm a suspicion in a cluster of `alive` members (the suspect
/// included), or `None` when there are too few members to confirm anything independently:
/// then foca's own suspicion timer alone decides.
pub fn needed(alive: usize) -> Option<usize> {
    let others = alive.saturating_sub(1);
    let needed = others.min(3);
    (needed >= 2).then_some(needed)
}

/// The chance that a member hearing a report confirms it, so that about [`PROBERS`] of the
/// `alive` members (the suspect and the reporter excluded) do.
pub fn probe_chance(alive: usize) -> f64 {
    let candidates = alive.saturating_sub(2).max(1) as f64;
    (PROBERS / candidates).min(1.0)
}

/// What the actor does next for one confirming probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeStep {
    /// Ping the suspect (again) with this nonce, and come back after the ping interval.
    Ping(u64),
    /// No answer to any ping: report the suspect at this incarnation.
    Report(u16),
    /// The suspect answered, or the suspicion is gone: nothing more to do.
    Done,
}

#[derive(Default)]
pub struct Suspicions {
    cases: HashMap<NodeId, Case>,
    next_nonce: u64,
}

struct Case {
    incarnation: u16,
    since: Instant,
    reporters: BTreeSet<String>,
    /// Already declared down on this node.
    decided: bool,
    probe: Option<Probe>,
}

struct Probe {
    nonce: u64,
    pings: u8,
    /// The suspect answered, or we reported it already (its host refused a packet).
    over: bool,
}

impl Suspicions {
    /// Counts a report; returns how many distinct members now report the member at the
    /// report's incarnation (0 when the report is about an older incarnation than one already
    /// reported, i.e. stale, or when the table is full).
    pub fn report(&mut self, report: &SuspectReport, now: Instant) -> usize {
        if self.cases.len() >= MAX_CASES && !self.cases.contains_key(&report.member) {
            return 0;
        }
        let case = self
            .cases
            .entry(report.member.clone())
            .or_insert_with(|| Case {
                incarnation: report.incarnation,
                since: now,
                reporters: BTreeSet::new(),
                decided: false,
                probe: None,
            });
        if report.incarnation < case.incarnation {
            return 0;
        }
        if report.incarnation > case.incarnation {
            // The member refuted an earlier suspicion and is suspected again: start over.
            *case = Case {
                incarnation: report.incarnation,
                since: now,
                reporters: BTreeSet::new(),
                decided: false,
                probe: None,
            };
        }
        case.reporters.insert(report.reporter.clone());
        case.reporters.len()
    }

    /// Whether the member's suspicion has `needed` reporters and was not acted on yet; if so
    /// it is marked as acted on, so each node declares a member down once.
    pub fn take_verdict(&mut self, member: &NodeId, needed: usize) -> Option<u16> {
        let case = self.cases.get_mut(member)?;
        if case.decided || case.reporters.len() < needed {
            return None;
        }
        case.decided = true;
        Some(case.incarnation)
    }

    /// Starts confirming the member's suspicion (once per suspicion): the first step.
    pub fn start_probe(&mut self, member: &NodeId) -> ProbeStep {
        let Some(case) = self.cases.get_mut(member) else {
            return ProbeStep::Done;
        };
        if case.probe.is_some() || case.decided {
            return ProbeStep::Done;
        }
        self.next_nonce = self.next_nonce.wrapping_add(1);
        case.probe = Some(Probe {
            nonce: self.next_nonce,
            pings: 0,
            over: false,
        });
        self.probe_step(member)
    }

    /// The next step of a confirming probe, called once per ping interval.
    pub fn probe_step(&mut self, member: &NodeId) -> ProbeStep {
        let Some(case) = self.cases.get_mut(member) else {
            return ProbeStep::Done;
        };
        let Some(probe) = case.probe.as_mut() else {
            return ProbeStep::Done;
        };
        if probe.over || case.decided {
            return ProbeStep::Done;
        }
        if probe.pings < PINGS {
            probe.pings += 1;
            return ProbeStep::Ping(probe.nonce);
        }
        ProbeStep::Report(case.incarnation)
    }

    /// An answer to one of our pings arrived.
    pub fn answered(&mut self, nonce: u64) {
        for case in self.cases.values_mut() {
            if let Some(probe) = case.probe.as_mut()
                && probe.nonce == nonce
            {
                probe.over = true;
            }
        }
    }

    /// The member's host refused a packet of ours (see refused.rs): whether we should report
    /// it now, i.e. we have not reported it at this incarnation yet. Our own confirming probe
    /// of it, if one runs, has nothing left to do.
    pub fn refused(&mut self, member: &NodeId, incarnation: u16, local: &str) -> bool {
        let Some(case) = self.cases.get_mut(member) else {
            return true;
        };
        if case.incarnation != incarnation {
            // Older: the member refuted since, and this is a new suspicion. Newer: we are
            // behind on the member's incarnation; foca will catch up, report then.
            return case.incarnation < incarnation;
        }
        if let Some(probe) = case.probe.as_mut() {
            probe.over = true;
        }
        !case.decided && !case.reporters.contains(local)
    }

    /// The member is down or gone: nothing left to confirm.
    pub fn forget(&mut self, member: &NodeId) {
        self.cases.remove(member);
    }

    /// Drops suspicions that ended without a verdict long ago.
    pub fn expire(&mut self, now: Instant) {
        self.cases
            .retain(|_, c| now.duration_since(c.since) < FORGET_AFTER);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId {
            name: name.into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            generation: 1,
        }
    }

    fn report(member: &str, incarnation: u16, reporter: &str) -> SuspectReport {
        SuspectReport {
            member: node(member),
            incarnation,
            reporter: reporter.into(),
        }
    }

    #[test]
    fn too_few_members_leave_it_to_foca() {
        assert_eq!(needed(1), None);
        assert_eq!(needed(2), None);
        assert_eq!(needed(3), Some(2));
        assert_eq!(needed(4), Some(3));
        assert_eq!(needed(50), Some(3));
        assert_eq!(probe_chance(5), 1.0);
        assert!((probe_chance(50) - 6.0 / 48.0).abs() < 1e-9);
    }

    #[test]
    fn distinct_reporters_of_one_incarnation_make_a_verdict_once() {
        let mut s = Suspicions::default();
        let now = Instant::now();
        let x = node("x");
        assert_eq!(s.report(&report("x", 4, "a"), now), 1);
        assert_eq!(
            s.report(&report("x", 4, "a"), now),
            1,
            "the same reporter twice"
        );
        assert_eq!(s.take_verdict(&x, 2), None);
        assert_eq!(s.report(&report("x", 4, "b"), now), 2);
        assert_eq!(s.take_verdict(&x, 2), Some(4));
        assert_eq!(s.take_verdict(&x, 2), None, "a verdict is given once");
    }

    #[test]
    fn a_refutation_starts_the_count_over_and_stale_reports_are_ignored() {
        let mut s = Suspicions::default();
        let now = Instant::now();
        let x = node("x");
        s.report(&report("x", 4, "a"), now);
        s.report(&report("x", 4, "b"), now);
        // x refuted (incarnation 5) and was suspected again by c.
        assert_eq!(s.report(&report("x", 5, "c"), now), 1);
        assert_eq!(s.report(&report("x", 4, "d"), now), 0, "stale");
        assert_eq!(s.take_verdict(&x, 2), None);
        assert_eq!(s.report(&report("x", 5, "a"), now), 2);
        assert_eq!(s.take_verdict(&x, 2), Some(5));
    }

    #[test]
    fn a_probe_pings_a_few_times_then_reports_unless_answered() {
        let mut s = Suspicions::default();
        let now = Instant::now();
        let x = node("x");
        let y = node("y");
        assert_eq!(s.start_probe(&x), ProbeStep::Done, "no suspicion, no probe");
        s.report(&report("x", 2, "a"), now);
        s.report(&report("y", 7, "a"), now);
        let ProbeStep::Ping(nx) = s.start_probe(&x) else {
            panic!("first ping")
        };
        assert_eq!(
            s.start_probe(&x),
            ProbeStep::Done,
            "one probe per suspicion"
        );
        assert_eq!(s.probe_step(&x), ProbeStep::Ping(nx));
        assert_eq!(s.probe_step(&x), ProbeStep::Ping(nx));
        assert_eq!(s.probe_step(&x), ProbeStep::Report(2));

        let ProbeStep::Ping(ny) = s.start_probe(&y) else {
            panic!("first ping")
        };
        assert_ne!(nx, ny);
        s.answered(ny);
        assert_eq!(s.probe_step(&y), ProbeStep::Done);
    }

    #[test]
    fn a_refusal_is_reported_once_per_incarnation_and_ends_our_probe() {
        let mut s = Suspicions::default();
        let now = Instant::now();
        let x = node("x");
        assert!(s.refused(&x, 3, "me"), "nobody suspects x yet: report");
        // Our report comes back to us through the broadcast handler.
        s.report(&report("x", 3, "me"), now);
        assert!(!s.refused(&x, 3, "me"), "reported already");
        assert!(!s.refused(&x, 2, "me"), "about an older incarnation");

        // Someone else suspects y, we start confirming, then y's host refuses our ping.
        let y = node("y");
        s.report(&report("y", 1, "a"), now);
        assert!(matches!(s.start_probe(&y), ProbeStep::Ping(_)));
        assert!(s.refused(&y, 1, "me"));
        assert_eq!(s.probe_step(&y), ProbeStep::Done, "the pinging is over");
        s.report(&report("y", 1, "me"), now);
        assert!(!s.refused(&y, 1, "me"));

        // y refuted (incarnation 2): a new refusal is news again.
        assert!(s.refused(&y, 2, "me"));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut s = Suspicions::default();
        let now = Instant::now();
        for i in 0..MAX_CASES {
            assert_eq!(s.report(&report(&format!("m{i}"), 1, "a"), now), 1);
        }
        assert_eq!(s.report(&report("one-too-many", 1, "a"), now), 0);
        assert_eq!(
            s.report(&report("m0", 1, "b"), now),
            2,
            "known ones still count"
        );
        assert_eq!(s.len(), MAX_CASES);
    }

    #[test]
    fn old_and_forgotten_suspicions_are_dropped() {
        let mut s = Suspicions::default();
        let now = Instant::now();
        s.report(&report("x", 1, "a"), now);
        s.report(&report("y", 1, "a"), now + Duration::from_secs(100));
        s.forget(&node("y"));
        assert_eq!(s.len(), 1);
        s.expire(now + FORGET_AFTER);
        assert_eq!(s.len(), 0);
    }
}
