//! The actor: the one task that owns the [`Node`], the UDP socket and the timer queue. It
//! feeds the node what arrives — datagrams, due timers, commands from the handle, requests
//! from push-pull tasks — and carries out the effects the node answers with: it seals and
//! sends datagrams (one `sendmmsg` per input), sets timers, hands events to the handlers,
//! streams query updates, starts exchanges and writes the snapshot. Every decision is the
//! node's; this file is the plumbing around it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumor_handlers::event::Event;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, warn};

use super::datagrams::Burst;
use super::handle::Command;
use super::key_queries;
use super::keyring::{KeyChangeStamp, SharedKeyring};
use super::node::query::QueryUpdate;
use super::node::views::MemberList;
use super::node::{Effect, Node, Now, Persist, Tick};
use super::push_pull::{self, PushPull, Request};
use super::refused;
use super::snapshot::Snapshotter;
use super::timers::TimerQueue;
use super::wire::{self, MAX_DATAGRAM};

/// How often changes reach the snapshot file (each write is fsync'd).
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) struct Actor {
    node: Node,
    socket: Arc<UdpSocket>,
    timers: TimerQueue,
    commands: mpsc::Receiver<Command>,
    /// Requests from push-pull tasks (our state, a peer's state to merge, outcomes).
    requests: mpsc::Receiver<Request>,
    /// For the exchanges the node asks for.
    push_pull: PushPull,
    keyring: SharedKeyring,
    events: mpsc::UnboundedSender<Event>,
    /// Askers of our queries still running, by query id.
    queries: HashMap<u32, mpsc::UnboundedSender<QueryUpdate>>,
    /// Callers of `leave`, answered when the node has left.
    leaving: Vec<oneshot::Sender<()>>,
    /// Members and clocks written to disk, so a restart rejoins on its own.
    snapshot: Option<Snapshotter>,
    /// Write the snapshot once the current effects are carried out.
    snapshot_now: bool,
    /// The datagrams of one input, sent with one system call.
    burst: Burst,
    /// The handler events of one input, handed on after its datagrams went out.
    handing: Vec<Event>,
    /// Events went to the handlers since the run loop last yielded (see [`Actor::run`]).
    handed_off: bool,
    /// The socket reports packets a member's host refused (refused.rs).
    notice_refusals: bool,
    refused_buf: Vec<SocketAddr>,
    /// The member list as last published, and the table's revision it showed.
    members: watch::Sender<MemberList>,
    published: Option<u64>,
    stopped: bool,
}

/// What the actor is given to run a node.
pub(crate) struct Wiring {
    pub socket: Arc<UdpSocket>,
    pub commands: mpsc::Receiver<Command>,
    pub requests: mpsc::Receiver<Request>,
    pub push_pull: PushPull,
    pub events: mpsc::UnboundedSender<Event>,
    pub snapshot: Option<Snapshotter>,
    /// Whether the socket was set up to report refused packets ([`refused::enable`]).
    pub notice_refusals: bool,
    /// Where the member list is published whenever it changes.
    pub members: watch::Sender<MemberList>,
}

impl Actor {
    pub(crate) fn new(node: Node, wiring: Wiring) -> Self {
        Actor {
            node,
            socket: wiring.socket,
            timers: TimerQueue::default(),
            commands: wiring.commands,
            requests: wiring.requests,
            keyring: wiring.push_pull.keyring.clone(),
            push_pull: wiring.push_pull,
            events: wiring.events,
            queries: HashMap::new(),
            leaving: Vec::new(),
            snapshot: wiring.snapshot,
            snapshot_now: false,
            burst: Burst::default(),
            handing: Vec::new(),
            handed_off: false,
            notice_refusals: wiring.notice_refusals,
            refused_buf: Vec::new(),
            members: wiring.members,
            published: None,
            stopped: false,
        }
    }

    /// Runs until a graceful leave completes (or every handle is gone).
    pub(crate) async fn run(mut self) {
        self.node.start(Now::real());
        self.execute();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // One timer for the whole run, moved only when the next deadline changes. A new
        // `sleep_until` per turn of the loop registered a timer each time, and tokio wakes its
        // own thread (an eventfd write, then an empty `epoll_wait`) whenever a timer is
        // registered ahead of the ones it knows: two wasted system calls on every packet.
        // (Re-arming after a tick still costs them; tokio cannot tell it is on its thread.)
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut snapshot_due =
            tokio::time::interval_at(Instant::now() + SNAPSHOT_INTERVAL, SNAPSHOT_INTERVAL);
        snapshot_due.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while !self.stopped {
            let deadline = self.timers.next_deadline();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at);
                }
                armed = deadline;
            }
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(request) = self.requests.recv() => self.on_request(request),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_packet(&buf[..len], from),
                    // A refusal reported late; the error queue tells whose.
                    Err(e) if refused::is_refusal(&e) => {}
                    Err(e) => debug!("udp receive error: {e}"),
                },
                ready = self.socket.ready(Interest::ERROR), if self.notice_refusals => {
                    match ready {
                        Ok(_) => self.on_socket_errors(),
                        Err(e) => self.stop_noticing_refusals(&e),
                    }
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None; // fired: the next deadline, even an equal one, re-arms it
                    self.on_timers();
                }
                _ = snapshot_due.tick(), if self.snapshot.is_some() => self.write_snapshot(),
            }
            self.execute();
            // A ready socket does not make this loop yield, and the runtime has one thread:
            // while packets keep coming (the announcements that follow a user event, from
            // every member), the handlers' tasks would not run until they stop. Relays are
            // out by now; let them start.
            if std::mem::take(&mut self.handed_off) {
                tokio::task::yield_now().await;
            }
        }
        debug!("cluster actor stopped");
    }

    // ---- inputs ----

    fn on_packet(&mut self, packet: &[u8], from: SocketAddr) {
        let opened = wire::open(packet, self.keyring.read().as_ref());
        match opened {
            Ok((kind, body)) => self.node.on_datagram(from, kind, &body, Now::real()),
            Err(e) => self.node.on_unreadable(from, &e),
        }
    }

    fn on_timers(&mut self) {
        let (swim, ours) = self.timers.pop_due(Instant::now());
        let now = Now::real();
        for timer in swim {
            self.node.on_timer(Tick::Swim(timer), now);
        }
        for tick in ours {
            self.node.on_timer(tick, now);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Now::real();
        match cmd {
            Command::Members(reply) => {
                let _ = reply.send(self.node.members());
            }
            Command::Info(reply) => {
                let _ = reply.send(self.node.info());
            }
            Command::Ping(reply) => {
                let _ = reply.send(());
            }
            Command::RecentEvents(reply) => {
                let _ = reply.send(self.node.recent_events());
            }
            Command::SendEvent {
                name,
                payload,
                coalesce,
                reply,
            } => {
                let _ = reply.send(self.node.send_event(name, payload, coalesce, now));
            }
            Command::UpdateTags { set, delete, reply } => {
                let _ = reply.send(self.node.update_tags(set, delete, now));
            }
            Command::ForceLeave { node, prune, reply } => {
                let _ = reply.send(self.node.force_leave(node, prune, now));
            }
            Command::Leave(reply) => {
                self.leaving.push(reply);
                self.node.leave(now);
            }
            Command::Query { params, reply } => {
                let started = self.node.ask_query(params, now).map(|id| {
                    let (updates, receiver) = mpsc::unbounded_channel();
                    self.queries.insert(id, updates);
                    receiver
                });
                let _ = reply.send(started);
            }
            Command::Respond { origin, id, answer } => self.node.respond(origin, id, answer, now),
        }
    }

    fn on_request(&mut self, request: Request) {
        let now = Now::real();
        match request {
            Request::State { join, peer, reply } => {
                let state = self.node.exchange_state(join, peer.as_deref(), now);
                let _ = reply.send(state);
            }
            Request::Merge {
                remote,
                answer_to_join,
                reply,
            } => {
                self.node.merge(*remote, answer_to_join, now);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Request::Report(outcome) => self.node.on_exchange(outcome),
        }
    }

    /// The socket has errors queued: act on the refused packets among them.
    fn on_socket_errors(&mut self) {
        let mut refused = std::mem::take(&mut self.refused_buf);
        if let Err(e) = refused::drain(&self.socket, &mut refused) {
            self.stop_noticing_refusals(&e);
        }
        let now = Now::real();
        for addr in refused.drain(..) {
            self.node.on_refused(addr, now);
        }
        self.refused_buf = refused;
    }

    /// An error we cannot clear would wake the actor in a loop: give the feature up instead,
    /// and stop the kernel queueing reports nobody reads.
    fn stop_noticing_refusals(&mut self, error: &std::io::Error) {
        warn!(
            "reading the socket's error queue failed; refused packets are no longer noticed: {error}"
        );
        self.notice_refusals = false;
        if let Err(e) = refused::disable(&self.socket) {
            error!("could not turn off the socket's error reports: {e}");
        }
    }

    // ---- effects ----

    /// Carries out everything the node decided: datagrams first (one burst), then the
    /// events for the handlers, so relays are on the wire before a handler starts.
    fn execute(&mut self) {
        let mut events = std::mem::take(&mut self.handing);
        self.burst.clear();
        while let Some(effect) = self.node.next_effect() {
            match effect {
                Effect::Send { to, kind, body } => {
                    let keyring = self.keyring.read();
                    self.burst
                        .push(to, |buf| wire::seal(kind, &body, keyring.as_ref(), buf));
                }
                Effect::Timer { at, tick } => self.timers.schedule(Instant::from_std(at), tick),
                Effect::Event(event) => events.push(event),
                Effect::Query { id, update } => self.on_query_update(id, update),
                Effect::Exchange { peer, mode, why } => {
                    let port = self.push_pull.clone();
                    tokio::spawn(push_pull::exchange_for_node(port, peer, mode, why));
                }
                Effect::Rejoin { targets } => {
                    tokio::spawn(push_pull::rejoin(self.push_pull.clone(), targets));
                }
                Effect::KeyQuery {
                    origin,
                    id,
                    ltime,
                    name,
                    payload,
                } => {
                    let stamp = KeyChangeStamp {
                        ltime,
                        origin: origin.clone(),
                    };
                    let answer = key_queries::answer(&self.keyring, &name, &payload, stamp);
                    self.node.respond(origin, id, answer, Now::real());
                }
                Effect::Persist(change) => self.persist(change),
                Effect::Left => {
                    for reply in self.leaving.drain(..) {
                        let _ = reply.send(());
                    }
                    self.stopped = true;
                }
            }
        }
        if !self.burst.is_empty() {
            let burst = &self.burst;
            let sent = burst.send(&self.socket, |i, e| {
                debug!(to = %burst.to(i), "udp send failed: {e}");
            });
            self.node.count_sent(sent as u64);
        }
        // The member list first: a reader woken by an event (a template rendering the
        // members) must find the list that event belongs to.
        self.publish_members();
        for event in events.drain(..) {
            // The receiver lives as long as the agent; nothing to do if it is gone.
            let _ = self.events.send(event);
            self.handed_off = true;
        }
        self.handing = events;
        if std::mem::take(&mut self.snapshot_now) {
            self.write_snapshot();
        }
    }

    /// Publishes the member list if it changed since it was last published: readers (DNS,
    /// templates) hold a copy and never wait on this task.
    fn publish_members(&mut self) {
        let revision = self.node.members_revision();
        if self.published != Some(revision) {
            self.published = Some(revision);
            self.members
                .send_replace(MemberList::new(self.node.members()));
        }
    }

    fn on_query_update(&mut self, id: u32, update: QueryUpdate) {
        let done = matches!(update, QueryUpdate::Done { .. });
        if let Some(asker) = self.queries.get(&id) {
            let _ = asker.send(update);
        }
        if done {
            self.queries.remove(&id);
        }
    }

    fn persist(&mut self, change: Persist) {
        let Some(snapshot) = self.snapshot.as_mut() else {
            return;
        };
        match change {
            Persist::Alive { name, addr } => snapshot.alive(&name, addr),
            Persist::NotAlive { name } => snapshot.not_alive(&name),
            Persist::Left(left) => snapshot.left(left),
            Persist::Now => self.snapshot_now = true,
            Persist::Sync => {
                self.write_snapshot();
                if let Some(snapshot) = self.snapshot.as_ref() {
                    snapshot.sync();
                }
            }
        }
    }

    /// Records the clocks and queues what changed for the snapshot file.
    fn write_snapshot(&mut self) {
        let (event, query) = self.node.clocks();
        if let Some(snapshot) = self.snapshot.as_mut() {
            snapshot.clocks(event, query);
            snapshot.flush();
        }
    }
}
