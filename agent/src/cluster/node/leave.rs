//! A graceful leave: announce it, give the announcement time to spread (bounded), then tell
//! foca and stop. Members that hear the announcement list the node as `left` (Serf's
//! `member-leave`), not `failed`; the node's own handlers get its `member-leave` too, as
//! Serf's do.

use std::time::{Duration, Instant};

use rumor_handlers::event::MemberEventKind;
use tracing::{info, warn};

use super::effect::{Effect, Persist, Tick};
use super::message::{Broadcast, LeaveIntent};
use super::{Node, Now};

/// How long a graceful leave waits at most for its announcement to spread.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// A leave waits at least this long so the announcement travels ahead of foca's "down".
const LEAVE_MIN_SPREAD: Duration = Duration::from_millis(250);
/// How often a leave checks whether its announcement has gone out.
const LEAVE_POLL: Duration = Duration::from_millis(50);

/// A leave in progress.
pub(super) struct Leaving {
    started: Instant,
}

/// What a leave in progress does next.
#[derive(Debug, PartialEq, Eq)]
enum LeaveStep {
    /// Check again at this time.
    Wait(Instant),
    /// Announced (or waited long enough): leave now.
    Finish,
}

impl Leaving {
    /// `alone`: no member left to tell; `spread`: foca has sent the announcement as often as
    /// it sends anything.
    fn step(&self, now: Instant, alone: bool, spread: bool) -> LeaveStep {
        let elapsed = now.saturating_duration_since(self.started);
        let spread = spread && elapsed >= LEAVE_MIN_SPREAD;
        if alone || spread || elapsed >= LEAVE_TIMEOUT {
            LeaveStep::Finish
        } else {
            LeaveStep::Wait(now + LEAVE_POLL)
        }
    }
}

impl Node {
    /// Starts a graceful leave; [`Effect::Left`] says when it is complete. Asking again while
    /// leaving changes nothing.
    pub fn leave(&mut self, now: Now) {
        self.tick_clock(now);
        if self.leaving.is_some() {
            return;
        }
        info!("leaving the cluster");
        let intent = {
            let mut state = self.state.lock();
            state.members.set_local_leaving(now.wall);
            let me = &state.members.local().id;
            LeaveIntent {
                node: me.name.clone(),
                generation: me.generation,
                by: me.name.clone(),
                prune: false,
            }
        };
        self.leaving = Some(Leaving { started: now.mono });
        self.add_broadcast(Broadcast::Leave(intent));
        self.effects.timer(now.mono + LEAVE_POLL, Tick::LeaveCheck);
    }

    /// Finishes the leave once the announcement went out (or the wait is over).
    pub(super) fn check_leave(&mut self) {
        let Some(leaving) = &self.leaving else {
            return;
        };
        let alone = self.foca.num_members() == 0;
        let spread = self.foca.custom_broadcast_backlog() == 0;
        let elapsed = self.now.mono.saturating_duration_since(leaving.started);
        match leaving.step(self.now.mono, alone, spread) {
            LeaveStep::Wait(at) => return self.effects.timer(at, Tick::LeaveCheck),
            LeaveStep::Finish => {}
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            warn!("foca leave: {e}");
        }
        self.flush();
        // Serf's handlers see the node's own `member-leave` as it leaves; the agent runs it
        // before the process ends.
        let left = self
            .state
            .lock()
            .members
            .local_event(MemberEventKind::Leave);
        self.effects.push(Effect::Event(left));
        self.effects.persist(Persist::Left(true));
        // The node is stopping: its last records must be on disk before the process ends.
        self.effects.persist(Persist::Sync);
        info!(elapsed_ms = elapsed.as_millis() as u64, "left the cluster");
        self.effects.push(Effect::Left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leave_waits_for_its_announcement_but_not_forever() {
        let t0 = Instant::now();
        let leaving = Leaving { started: t0 };
        let at = |ms| t0 + Duration::from_millis(ms);
        // Sent at once, but the announcement gets its minimum head start over foca's "down".
        assert_eq!(
            leaving.step(at(10), false, true),
            LeaveStep::Wait(at(10) + LEAVE_POLL)
        );
        assert_eq!(leaving.step(at(250), false, true), LeaveStep::Finish);
        // Not sent yet: wait, up to the timeout.
        assert!(matches!(
            leaving.step(at(2000), false, false),
            LeaveStep::Wait(_)
        ));
        assert_eq!(leaving.step(at(3000), false, false), LeaveStep::Finish);
        // Nobody to tell: leave at once.
        assert_eq!(leaving.step(at(1), true, false), LeaveStep::Finish);
    }
}
