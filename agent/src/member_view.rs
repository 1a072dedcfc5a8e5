//! The member list handed to the handlers: the cluster's published list
//! ([`ClusterHandle::watch_members`](crate::cluster::ClusterHandle::watch_members)) turned into
//! the handlers crate's [`Members`], which does not know the cluster's types.
//!
//! Published twice over, on purpose: right before each member event is dispatched (the actor
//! publishes a step's list before that step's events, so a template woken by the event renders
//! the list the event belongs to), and on every change in the background (a template waiting
//! for quiet sees each change as it happens).

use rumor_handlers::{Dispatcher, Member, MemberStatus, Members};
use tokio::sync::watch;

use crate::cluster::{MemberList, MemberView, Status};

/// The handlers' view of the cluster's list.
pub fn for_handlers(list: &[MemberView]) -> Members {
    Members::new(list.iter().map(member).collect())
}

fn member(m: &MemberView) -> Member {
    Member {
        name: m.name.clone(),
        address: m.addr,
        port: m.port,
        status: match m.status {
            Status::Alive => MemberStatus::Alive,
            Status::Leaving => MemberStatus::Leaving,
            Status::Left => MemberStatus::Left,
            Status::Failed => MemberStatus::Failed,
        },
        tags: m.tags.clone(),
        generation: m.generation,
        passing: m.passing(),
    }
}

/// Hands the cluster's list to the dispatcher if it changed since `list` last saw it.
pub fn publish_if_changed(list: &mut watch::Receiver<MemberList>, dispatcher: &Dispatcher) {
    if list.has_changed().unwrap_or(false) {
        let current = list.borrow_and_update().clone();
        dispatcher.set_members(for_handlers(&current));
    }
}

/// Hands the current list to the dispatcher, then every change, until the cluster stops.
pub async fn keep_published(mut list: watch::Receiver<MemberList>, dispatcher: Dispatcher) {
    loop {
        let current = list.borrow_and_update().clone();
        dispatcher.set_members(for_handlers(&current));
        if list.changed().await.is_err() {
            return;
        }
    }
}
