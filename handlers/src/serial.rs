//! Serial groups: handlers that name the same group never run at the same time.
//!
//! rumor runs different handlers side by side, so a slow one never delays another. Serf runs
//! every handler one after the other, and scripts written for it may rely on that: the web
//! load-balancer demo's member-join and member-leave scripts both edit haproxy.cfg, which two
//! runs at once could interleave. Handlers that share a `serial_group` take turns — fairly, in
//! the order their runs became due — and stay concurrent with everything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::lock;

/// The groups' turns, made on first use and shared by every handler of the dispatcher.
#[derive(Debug, Default)]
pub(crate) struct SerialGroups {
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SerialGroups {
    /// The turn of group `name`: hold its guard for the whole run.
    pub fn turn(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.turns)
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_one_turn() {
        let groups = SerialGroups::default();
        assert!(Arc::ptr_eq(&groups.turn("serf"), &groups.turn("serf")));
        assert!(!Arc::ptr_eq(&groups.turn("serf"), &groups.turn("other")));
    }
}
