//! The cluster's public face: a cheap, cloneable handle that sends commands to the actor task
//! that owns the node. The data types the commands return are in `node/views.rs`.

use rumor_handlers::event::Tags;
use tokio::sync::{mpsc, oneshot, watch};

use super::error::ClusterError;
use super::node::query::QueryUpdate;
use super::node::views::{ClusterInfo, JoinReport, MemberList, MemberView, QueryParams, SeenEvent};
use super::push_pull::{self, PushPull};

/// A request to the actor. Each carries a channel for its answer.
pub(crate) enum Command {
    Members(oneshot::Sender<Vec<MemberView>>),
    Info(oneshot::Sender<ClusterInfo>),
    RecentEvents(oneshot::Sender<Vec<SeenEvent>>),
    SendEvent {
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        reply: oneshot::Sender<Result<u64, ClusterError>>,
    },
    UpdateTags {
        set: Tags,
        delete: Vec<String>,
        reply: oneshot::Sender<Result<Tags, ClusterError>>,
    },
    ForceLeave {
        node: String,
        prune: bool,
        reply: oneshot::Sender<Result<(), ClusterError>>,
    },
    Leave(oneshot::Sender<()>),
    /// Answered at once: proves the actor's loop still turns (the systemd watchdog).
    Ping(oneshot::Sender<()>),
    Query {
        params: QueryParams,
        reply: oneshot::Sender<Result<mpsc::UnboundedReceiver<QueryUpdate>, ClusterError>>,
    },
    /// This node's answer to a query it received (`Err`: it will not answer, and why).
    Respond {
        origin: String,
        id: u32,
        answer: Result<Vec<u8>, String>,
    },
}

/// A cloneable handle to the running cluster. Every method fails with
/// [`ClusterError::Stopped`] once the agent is shutting down.
#[derive(Clone)]
pub struct ClusterHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    /// For joins: they run here, in the caller's task, not in the actor.
    pub(crate) push_pull: PushPull,
    /// The member list, republished by the actor on every change.
    pub(crate) members: watch::Receiver<MemberList>,
}

impl ClusterHandle {
    /// A handle whose commands are answered by whoever holds the receiver (the control API's
    /// tests use a fake cluster this way); joins through it fail as if the agent stopped.
    #[cfg(test)]
    pub(crate) fn answered_by(commands: mpsc::Sender<Command>) -> ClusterHandle {
        let (requests, _) = mpsc::channel(1);
        let keyring = super::keyring::SharedKeyring::default();
        let timeout = std::time::Duration::from_secs(1);
        let (_, members) = watch::channel(MemberList::default());
        ClusterHandle {
            commands,
            push_pull: PushPull::new(requests, keyring, timeout),
            members,
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClusterError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ClusterError::Stopped)?;
        rx.await.map_err(|_| ClusterError::Stopped)
    }

    /// The member list as the cluster last published it, and every later version: for readers
    /// that must answer without waiting on the cluster (`borrow()` is the current list,
    /// `changed().await` waits for the next). Empty until the cluster has started.
    pub fn watch_members(&self) -> watch::Receiver<MemberList> {
        self.members.clone()
    }

    /// Every member this node knows, including itself, sorted by name.
    pub async fn members(&self) -> Result<Vec<MemberView>, ClusterError> {
        self.ask(Command::Members).await
    }

    pub async fn info(&self) -> Result<ClusterInfo, ClusterError> {
        self.ask(Command::Info).await
    }

    /// Returns once the actor has taken a command off its queue: the gossip loop is turning.
    pub async fn ping(&self) -> Result<(), ClusterError> {
        self.ask(Command::Ping).await
    }

    /// The user events still in the deduplication window, oldest first.
    pub async fn recent_events(&self) -> Result<Vec<SeenEvent>, ClusterError> {
        self.ask(Command::RecentEvents).await
    }

    /// Sends a user event to the whole cluster; returns its Lamport time.
    /// Fails with [`ClusterError::EventTooLarge`] when name + payload exceed the limit.
    pub async fn send_event(
        &self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    ) -> Result<u64, ClusterError> {
        self.ask(|reply| Command::SendEvent {
            name,
            payload,
            coalesce,
            reply,
        })
        .await?
    }

    /// Sets and deletes tags of this node; returns the resulting tags.
    pub async fn update_tags(&self, set: Tags, delete: Vec<String>) -> Result<Tags, ClusterError> {
        self.ask(|reply| Command::UpdateTags { set, delete, reply })
            .await?
    }

    /// Marks a failed member as left everywhere (`prune` also removes it from the list at once).
    pub async fn force_leave(&self, node: String, prune: bool) -> Result<(), ClusterError> {
        self.ask(|reply| Command::ForceLeave { node, prune, reply })
            .await?
    }

    /// Announces a graceful leave, waits (bounded) for it to spread, and stops the cluster.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.ask(Command::Leave).await
    }

    /// Joins through each address (`host:port`, resolved here) with a TCP push-pull exchange.
    /// Succeeds if at least one answered; the report says which did not and why.
    pub async fn join(&self, addrs: &[String]) -> Result<JoinReport, ClusterError> {
        let mut report = JoinReport {
            joined: 0,
            errors: Vec::new(),
        };
        for addr in addrs {
            match push_pull::join_one(&self.push_pull, addr).await {
                Ok(()) => report.joined += 1,
                Err(e) => report.errors.push(format!("{addr}: {e}")),
            }
        }
        if report.joined == 0 && !addrs.is_empty() {
            return Err(ClusterError::JoinFailed(report.errors.join("; ")));
        }
        Ok(report)
    }

    /// Sends a query; the receiver gets acks and answers as they arrive, then `Done`.
    pub async fn query(
        &self,
        params: QueryParams,
    ) -> Result<mpsc::UnboundedReceiver<QueryUpdate>, ClusterError> {
        self.ask(|reply| Command::Query { params, reply }).await?
    }

    /// Whether gossip is encrypted now (a reload can turn it on).
    pub fn encrypted(&self) -> bool {
        self.push_pull.keyring.read().is_some()
    }

    /// Sets encryption anew on a reload: turns it on with `key` if it is off, and sets how
    /// strictly it applies (the staged move of a live cluster to encryption). Returns what it
    /// is now, for the reload's report.
    pub fn set_encryption(
        &self,
        key: Option<&str>,
        verify_incoming: bool,
        verify_outgoing: bool,
    ) -> Result<String, String> {
        self.push_pull
            .keyring
            .restage(key, verify_incoming, verify_outgoing)
    }

    /// Answers a query this node received (from the handlers). Late answers are dropped.
    pub async fn respond(
        &self,
        origin: String,
        id: u32,
        answer: Result<Vec<u8>, String>,
    ) -> Result<(), ClusterError> {
        self.commands
            .send(Command::Respond { origin, id, answer })
            .await
            .map_err(|_| ClusterError::Stopped)
    }
}
