//! The node's wiring of suspicion confirmation (see `suspicion.rs` for the why and the
//! bookkeeping): reporting a member our probe or our packet could not reach, pinging a
//! suspect others reported, and declaring it down once independent members agree.

use std::net::SocketAddr;

use foca::Member;
use rand::RngExt;
use tracing::{debug, error, info};

use super::effect::Tick;
use super::identity::NodeId;
use super::message::{Broadcast, SuspectReport};
use super::suspicion::{self, ProbeStep};
use super::{Node, Now};
use crate::cluster::wire::{self, Kind};

impl Node {
    /// A packet to `addr` was refused by its host (ICMP port unreachable): if a member lives
    /// there, its agent is gone. That is reported like a failed probe of ours, once per
    /// incarnation.
    pub fn on_refused(&mut self, addr: SocketAddr, now: Now) {
        self.tick_clock(now);
        self.state.lock().counters.packets_refused += 1;
        let Some((member, incarnation)) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == addr && m.state() != foca::State::Down)
            .map(|m| (m.id().clone(), m.incarnation()))
        else {
            return;
        };
        let local = self.foca.identity().name.clone();
        if self.suspicions.refused(&member, incarnation, &local) {
            debug!(%member, "its host refused our packet; reporting the suspicion");
            self.report_suspect(member);
            self.flush();
        }
    }

    /// Our probe of `member` failed (foca now suspects it): tell everyone.
    pub(super) fn report_suspect(&mut self, member: NodeId) {
        let Some(incarnation) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id() == &member && m.state() != foca::State::Down)
            .map(|m| m.incarnation())
        else {
            return;
        };
        let reporter = self.state.lock().members.local().id.name.clone();
        debug!(%member, incarnation, "probe failed; reporting the suspicion");
        let report = Broadcast::Suspect(SuspectReport {
            member,
            incarnation,
            reporter,
        });
        // Our own copy comes back through the broadcast handler into the suspect inbox.
        if let Err(e) = self.foca.add_broadcast(&report.encode()) {
            error!("could not queue a suspicion report: {e}");
        }
    }

    /// A report (ours or another member's): count it, declare the member down once enough
    /// members agree, or help confirm it by pinging the suspect ourselves.
    pub(super) fn on_suspect_report(&mut self, report: SuspectReport) {
        let local = self.foca.identity().clone();
        if report.member.name == local.name {
            if report.member == local {
                // Refute at once, rather than when foca's gossip brings us the suspicion:
                // foca answers a suspicion of itself with a higher incarnation.
                let me = Member::new(local, report.incarnation, foca::State::Suspect);
                if let Err(e) = self
                    .foca
                    .apply_many(std::iter::once(me), true, &mut self.runtime)
                {
                    debug!("refuting a suspicion: {e}");
                }
            }
            return;
        }
        let reporters = self.suspicions.report(&report, self.now.mono);
        if reporters == 0 {
            return; // about an incarnation that was refuted already
        }
        let alive = self.foca.num_members() + 1;
        let Some(needed) = suspicion::needed(alive) else {
            return;
        };
        if let Some(incarnation) = self.suspicions.take_verdict(&report.member, needed) {
            self.declare_down(report.member, incarnation, needed);
            return;
        }
        // Only members we know as alive are pinged: a report cannot aim our pings elsewhere.
        let known = self.foca.iter_members().any(|m| m.id() == &report.member);
        let first_heard = reporters == 1 && report.reporter != local.name;
        if known && first_heard && self.rng.random_bool(suspicion::probe_chance(alive)) {
            let step = self.suspicions.start_probe(&report.member);
            self.confirm_step(report.member, step);
        }
    }

    /// The ping interval of a confirming probe is over: the next step.
    pub(super) fn confirm_suspect(&mut self, member: NodeId) {
        let step = self.suspicions.probe_step(&member);
        self.confirm_step(member, step);
    }

    fn confirm_step(&mut self, member: NodeId, step: ProbeStep) {
        match step {
            ProbeStep::Ping(nonce) => {
                let body = wire::nonce_body(nonce).to_vec();
                self.effects.send(member.addr, Kind::Ping, body);
                let next = self.now.mono + self.config.profile.confirm_ping_interval();
                self.effects.timer(next, Tick::ConfirmSuspect(member));
            }
            ProbeStep::Report(_) => {
                self.report_suspect(member);
                self.flush();
            }
            ProbeStep::Done => {}
        }
    }

    /// Enough members could not reach `member`: declare it down now, unless it refuted the
    /// suspicion (a higher incarnation) or is down already.
    fn declare_down(&mut self, member: NodeId, incarnation: foca::Incarnation, reporters: usize) {
        let current = self
            .foca
            .iter_membership_state()
            .find(|m| m.id() == &member)
            .map(|m| (m.incarnation(), m.state() != foca::State::Down));
        match current {
            Some((known, true)) if known <= incarnation => {}
            _ => return,
        }
        info!(%member, reporters, "declaring the member down: independent members could not reach it");
        self.state.lock().counters.suspicions_confirmed += 1;
        let down = Member::new(member, incarnation, foca::State::Down);
        if let Err(e) = self
            .foca
            .apply_many(std::iter::once(down), true, &mut self.runtime)
        {
            debug!("declaring a member down: {e}");
        }
    }
}
