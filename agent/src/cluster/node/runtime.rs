//! The `foca::Runtime` the actor (and the simulation) hand to foca: it queues what foca asks
//! for — packets to send, timers to schedule, notifications — for the caller to carry out
//! after each call into foca.
//!
//! It is foca's `AccumulatingRuntime` minus one cost: rumor turns on foca's
//! `unstable-notifications` feature for `ProbeFailed` (the start of a suspicion, see
//! `suspicion.rs`), and that feature also reports every packet sent and received. Those two
//! are dropped here without copying their headers, so they cost nothing per packet.

use std::collections::VecDeque;
use std::time::Duration;

use foca::{Notification, OwnedNotification, Runtime, Timer};

use super::identity::NodeId;

#[derive(Default)]
pub struct SwimRuntime {
    to_send: VecDeque<(NodeId, Vec<u8>)>,
    to_schedule: VecDeque<(Duration, Timer<NodeId>)>,
    to_notify: VecDeque<OwnedNotification<NodeId>>,
}

impl Runtime<NodeId> for SwimRuntime {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        match notification {
            Notification::DataSent(_) | Notification::DataReceived(_) => {}
            other => self.to_notify.push_back(other.to_owned()),
        }
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.to_send.push_back((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.to_schedule.push_back((after, event));
    }
}

impl SwimRuntime {
    pub fn new() -> Self {
        SwimRuntime::default()
    }

    pub fn next_send(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.to_send.pop_front()
    }

    pub fn next_timer(&mut self) -> Option<(Duration, Timer<NodeId>)> {
        self.to_schedule.pop_front()
    }

    pub fn next_notification(&mut self) -> Option<OwnedNotification<NodeId>> {
        self.to_notify.pop_front()
    }

    /// Items not yet drained.
    pub fn backlog(&self) -> usize {
        self.to_send.len() + self.to_schedule.len() + self.to_notify.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{Header, Message};

    #[test]
    fn packet_notifications_are_dropped_and_the_rest_kept_in_order() {
        let a = NodeId {
            name: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
        };
        let mut rt = SwimRuntime::new();
        let header = Header {
            src: a.clone(),
            src_incarnation: 0,
            dst: a.clone(),
            message: Message::Ping(1),
        };
        rt.notify(Notification::DataSent(&header));
        rt.notify(Notification::MemberUp(&a));
        rt.notify(Notification::DataReceived(&header));
        rt.notify(Notification::ProbeFailed(1, &a));
        rt.send_to(a.clone(), b"x");
        assert_eq!(rt.backlog(), 3);
        assert!(matches!(
            rt.next_notification(),
            Some(OwnedNotification::MemberUp(_))
        ));
        assert!(matches!(
            rt.next_notification(),
            Some(OwnedNotification::ProbeFailed(1, _))
        ));
        assert!(rt.next_notification().is_none());
        assert_eq!(rt.next_send(), Some((a, b"x".to_vec())));
    }
}
