//! The actor: the one task that owns foca, the UDP socket and the timer queue. It turns
//! packets, timers and commands into calls on foca and the cluster state, sends what foca
//! asks it to, and forwards the resulting events. Decisions live in the state types; this
//! file is the plumbing around them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{Foca, Member, OwnedNotification, PostcardCodec};
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rumor_handlers::event::{Event, QueryEvent, Tags, UserEvent};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::config::ClusterConfig;
use super::datagrams::Burst;
use super::error::ClusterError;
use super::handle::{
    ClusterHandle, ClusterInfo, Command, Counters, MemberView, QueryParams, SeenEvent, Status,
};
use super::heartbeat;
use super::identity::NodeId;
use super::keyring::{Key, KeyChange};
use super::log_limit::LogLimiter;
use super::message::{self, Broadcast, LeaveIntent, SuspectReport, TagRecord};
use super::plumtree::{self, Plumtree};
use super::push_pull::{self, Mode, State};
use super::query::{self, PendingQuery, QueryMsg, QueryReply, QueryUpdate};
use super::refused;
use super::runtime::SwimRuntime;
use super::snapshot::Snapshotter;
use super::state::{self, SharedState, SwimNode};
use super::suspicion::{self, ProbeStep, Suspicions};
use super::timers::{Tick, TimerQueue};
use super::wire::{self, Kind, MAX_DATAGRAM};

/// How long a graceful leave waits at most for its announcement to spread.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// A leave waits at least this long so the announcement travels ahead of foca's "down".
const LEAVE_MIN_SPREAD: Duration = Duration::from_millis(250);
const LEAVE_POLL: Duration = Duration::from_millis(50);
const REAP_INTERVAL: Duration = Duration::from_secs(2);
const REANNOUNCE_FIRST: Duration = Duration::from_secs(1);
const REANNOUNCE_MAX: Duration = Duration::from_secs(30);
const QUERY_EXPIRY_INTERVAL: Duration = Duration::from_secs(5);
/// At most one catch-up push-pull with a member back from failed per this interval.
const CATCH_UP_SPACING: Duration = Duration::from_secs(1);
/// How often changes reach the snapshot file (each write is fsync'd).
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(500);

/// A query we asked, waiting for answers.
struct Asked {
    pending: PendingQuery,
    updates: mpsc::UnboundedSender<QueryUpdate>,
    /// The query as broadcast, to ask silent nodes again.
    broadcast: Vec<u8>,
    deadline: Instant,
    /// Wait before the next re-ask (doubles each time).
    reask_after: Duration,
}

/// Our answer to a query, kept until its deadline: a node that asks again (our answer was
/// lost) gets it again without running the handler twice.
struct Answered {
    reply_to: SocketAddr,
    reply: Vec<u8>,
    deadline: Instant,
}

/// Most answers kept for re-asks at once (each at most `max_response_bytes` and a header).
const MAX_KEPT_ANSWERS: usize = 1024;

/// A query we received and may still answer.
struct Received {
    reply_to: SocketAddr,
    deadline: Instant,
}

struct Leaving {
    started: Instant,
    replies: Vec<oneshot::Sender<()>>,
}

pub(crate) struct Actor {
    config: ClusterConfig,
    foca: SwimNode,
    runtime: SwimRuntime,
    state: SharedState,
    socket: Arc<UdpSocket>,
    timers: TimerQueue,
    commands: mpsc::Receiver<Command>,
    /// Our own handle, for background work that reports back (push-pull, re-announce).
    handle: ClusterHandle,
    events: mpsc::UnboundedSender<Event>,
    rng: StdRng,
    send_buf: Vec<u8>,
    connected: bool,
    ever_joined: bool,
    leaving: Option<Leaving>,
    stopped: bool,
    reannounce_backoff: Duration,
    reannounce_scheduled: bool,
    /// Live member count foca's config was last sized for.
    sized_for: usize,
    rejected_log: LogLimiter,
    invalid_log: LogLimiter,
    crypto_log: LogLimiter,
    asked: HashMap<u32, Asked>,
    received: HashMap<(String, u32), Received>,
    answered: HashMap<(String, u32), Answered>,
    /// When the last catch-up push-pull with a returning member started.
    last_catch_up: Option<Instant>,
    /// Suspicions being confirmed by independent members (fast failure detection).
    suspicions: Suspicions,
    /// The socket reports packets a member's host refused (refused.rs).
    notice_refusals: bool,
    refused_buf: Vec<SocketAddr>,
    /// The broadcast tree user events and queries spread on.
    tree: Plumtree<SocketAddr>,
    tree_buf: Vec<u8>,
    /// The tree's frames of one drain, sent with one system call.
    tree_burst: Burst,
    /// Members and clocks written to disk, so a restart rejoins on its own.
    snapshot: Option<Snapshotter>,
    /// Write the snapshot at the end of this flush rather than at the next interval.
    snapshot_now: bool,
    /// Events went to the handlers since the run loop last yielded (see [`Actor::run`]).
    handed_off: bool,
    /// This process continues an earlier one (from its snapshot): its first join is a rejoin,
    /// and events it missed while down are delivered (handlers skip what they already ran).
    restarted: bool,
}

impl Actor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: ClusterConfig,
        snapshot: Option<(Snapshotter, bool)>,
        local: NodeId,
        state: SharedState,
        socket: Arc<UdpSocket>,
        commands: mpsc::Receiver<Command>,
        handle: ClusterHandle,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let foca = Foca::with_custom_broadcast(
            local,
            config.profile.foca_config(1),
            rand::make_rng::<StdRng>(),
            PostcardCodec,
            state.clone(),
        );
        Actor {
            tree: Plumtree::new(config.profile.tree_graft_timeout())
                .with_direct_limit(config.direct_push_limit),
            config,
            foca,
            runtime: SwimRuntime::new(),
            state,
            socket,
            timers: TimerQueue::default(),
            commands,
            handle,
            events,
            rng: rand::make_rng::<StdRng>(),
            send_buf: Vec::with_capacity(wire::HEADER_LEN + wire::SWIM_PACKET_SIZE),
            connected: false,
            ever_joined: false,
            leaving: None,
            stopped: false,
            reannounce_backoff: REANNOUNCE_FIRST,
            reannounce_scheduled: false,
            sized_for: 1,
            rejected_log: LogLimiter::default(),
            invalid_log: LogLimiter::default(),
            crypto_log: LogLimiter::default(),
            asked: HashMap::new(),
            received: HashMap::new(),
            answered: HashMap::new(),
            suspicions: Suspicions::default(),
            notice_refusals: false,
            refused_buf: Vec::new(),
            tree_buf: Vec::with_capacity(wire::SWIM_PACKET_SIZE),
            tree_burst: Burst::default(),
            last_catch_up: None,
            snapshot_now: false,
            handed_off: false,
            restarted: snapshot.as_ref().is_some_and(|(_, restarted)| *restarted),
            snapshot: snapshot.map(|(s, _)| s),
        }
    }

    /// Whether the socket was set up to report refused packets ([`refused::enable`]).
    pub(crate) fn noticing_refusals(mut self, on: bool) -> Self {
        self.notice_refusals = on;
        self
    }

    /// Runs until a graceful leave completes (or every handle is gone).
    pub(crate) async fn run(mut self) {
        self.start();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // One timer for the whole run, moved only when the next deadline changes. A new
        // `sleep_until` per turn of the loop registered a timer each time, and tokio wakes its
        // own thread (an eventfd write, then an empty `epoll_wait`) whenever a timer is
        // registered ahead of the ones it knows: two wasted system calls on every packet.
        // (Re-arming after a tick still costs them; tokio cannot tell it is on its thread.)
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
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
            }
            // A ready socket does not make this loop yield, and the runtime has one thread:
            // while packets keep coming (the announcements that follow a user event, from
            // every member), the handlers' tasks would not run. Seen on 50 agents: a handler
            // started 20 ms after its event arrived. Relays are out by now; let them start.
            if std::mem::take(&mut self.handed_off) {
                tokio::task::yield_now().await;
            }
        }
        debug!("cluster actor stopped");
    }

    fn start(&mut self) {
        let now = Instant::now();
        // Announce our tags: they ride on gossip as soon as we have someone to tell.
        let tags = self.state.lock().members.local().tags.clone();
        let record = self.state.lock().members.local_tag_record(tags);
        self.add_broadcast(Broadcast::Tags(record));
        self.timers.schedule(
            now + self.config.profile.push_pull_interval(1),
            Tick::PushPull,
        );
        self.timers.schedule(now + REAP_INTERVAL, Tick::Reap);
        self.timers.schedule(
            now + self.config.profile.heartbeat_interval(),
            Tick::Heartbeat,
        );
        self.timers
            .schedule(now + QUERY_EXPIRY_INTERVAL, Tick::ExpireQueries);
        if self.snapshot.is_some() {
            self.timers
                .schedule(now + SNAPSHOT_INTERVAL, Tick::SnapshotFlush);
        }
        self.timers.schedule(
            now + self.config.profile.reconnect_interval(),
            Tick::Reconnect,
        );
    }

    /// Records the clocks and writes what changed to the snapshot file.
    fn flush_snapshot(&mut self) {
        let (event, query) = {
            let state = self.state.lock();
            (state.event_clock.time(), state.query_clock.time())
        };
        if let Some(snapshot) = self.snapshot.as_mut() {
            snapshot.clocks(event, query);
            snapshot.flush();
        }
    }

    // ---- inputs ----

    fn on_packet(&mut self, packet: &[u8], from: SocketAddr) {
        self.state.lock().counters.packets_received += 1;
        let opened = wire::open(packet, self.handle.keyring.read().as_ref());
        match opened {
            Ok((Kind::Swim, body)) => {
                if let Err(e) = self.foca.handle_data(&body, &mut self.runtime) {
                    self.state.lock().counters.packets_invalid += 1;
                    if let Some(suppressed) = self.invalid_log.allow() {
                        warn!(%from, suppressed, "invalid SWIM packet ignored: {e}");
                    }
                }
                self.flush();
            }
            Ok((Kind::QueryReply, body)) => match QueryReply::decode(&body) {
                Ok(reply) => self.on_query_reply(reply),
                Err(e) => self.reject(from, &format!("malformed query reply: {e}")),
            },
            Ok((Kind::Query, body)) => match Broadcast::decode(&body) {
                Ok(Broadcast::Query(q)) => self.on_query_asked_again(q),
                Ok(_) => self.reject(from, "a direct query frame must carry a query"),
                Err(e) => self.reject(from, &format!("malformed direct query: {e}")),
            },
            Ok((Kind::Tree, body)) => match plumtree::decode(&body) {
                Ok(plumtree::Frame::Gossip(encoded)) => self.on_tree_gossip(from, encoded, false),
                Ok(plumtree::Frame::Direct(encoded)) => self.on_tree_gossip(from, encoded, true),
                Ok(frame) => {
                    self.tree.on_control(from, &frame);
                    self.flush();
                }
                Err(e) => self.reject(from, &format!("malformed tree frame: {e}")),
            },
            Ok((Kind::Ping, body)) => match wire::parse_nonce(&body) {
                Some(nonce) => self.send_kind(Kind::Ack, from, &wire::nonce_body(nonce)),
                None => self.reject(from, "malformed ping"),
            },
            Ok((Kind::Ack, body)) => match wire::parse_nonce(&body) {
                Some(nonce) => self.suspicions.answered(nonce),
                None => self.reject(from, "malformed ack"),
            },
            // Nothing to do: its sender only wants to know whether our port is open.
            Ok((Kind::Heartbeat, _)) => {}
            Ok((kind, _)) => self.reject(from, &format!("a {kind:?} frame is not valid over UDP")),
            Err(e) if e.is_crypto() => {
                self.state.lock().counters.packets_undecryptable += 1;
                if let Some(suppressed) = self.crypto_log.allow() {
                    warn!(%from, suppressed, "dropped packet: {e}");
                }
            }
            Err(e) => self.reject(from, &e.to_string()),
        }
    }

    fn reject(&mut self, from: SocketAddr, reason: &str) {
        self.state.lock().counters.packets_rejected += 1;
        if let Some(suppressed) = self.rejected_log.allow() {
            warn!(%from, suppressed, "rejected packet: {reason}");
        }
    }

    fn on_timers(&mut self) {
        let (swim, ours) = self.timers.pop_due(Instant::now());
        for timer in swim {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                debug!("foca timer: {e}");
            }
            self.flush();
        }
        for tick in ours {
            match tick {
                Tick::Swim(_) => unreachable!("pop_due separates foca's timers"),
                Tick::PushPull => self.periodic_push_pull(),
                Tick::Reap => self.reap(),
                Tick::Reannounce => self.reannounce(),
                Tick::LeaveCheck => self.check_leave(),
                Tick::QueryDeadline(id) => self.finish_query(id, true),
                Tick::QueryReask(id) => self.reask(id),
                Tick::Reconnect => self.reconnect(),
                Tick::Heartbeat => self.heartbeat(),
                Tick::SnapshotFlush => {
                    self.flush_snapshot();
                    self.timers
                        .schedule(Instant::now() + SNAPSHOT_INTERVAL, Tick::SnapshotFlush);
                }
                Tick::ReleaseHeldEvents => {
                    if self.state.lock().holding_events() {
                        self.state.lock().release_events(None, SystemTime::now());
                        self.flush();
                    }
                }
                Tick::Tree(timer) => {
                    self.tree.timer_due(timer);
                    self.flush();
                }
                Tick::ConfirmSuspect(member) => {
                    let step = self.suspicions.probe_step(&member);
                    self.confirm_step(member, step);
                }
                Tick::ExpireQueries => {
                    let now = Instant::now();
                    self.received.retain(|_, r| r.deadline > now);
                    self.answered.retain(|_, a| a.deadline > now);
                    self.suspicions.expire(now.into_std());
                    self.timers
                        .schedule(now + QUERY_EXPIRY_INTERVAL, Tick::ExpireQueries);
                }
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Members(reply) => {
                let _ = reply.send(self.member_views());
            }
            Command::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Command::RecentEvents(reply) => {
                let _ = reply.send(self.recent_events());
            }
            Command::SendEvent {
                name,
                payload,
                coalesce,
                reply,
            } => {
                let _ = reply.send(self.send_event(name, payload, coalesce));
            }
            Command::UpdateTags { set, delete, reply } => {
                let _ = reply.send(self.update_tags(set, delete));
            }
            Command::ForceLeave { node, prune, reply } => {
                let _ = reply.send(self.force_leave(node, prune));
            }
            Command::Leave(reply) => self.begin_leave(reply),
            Command::Snapshot { join, reply } => {
                if join
                    && !self.ever_joined
                    && !self.restarted
                    && !self.state.lock().holding_events()
                {
                    self.state.lock().hold_events();
                    let bound = self.config.profile.push_pull_timeout() * 2;
                    self.timers
                        .schedule(Instant::now() + bound, Tick::ReleaseHeldEvents);
                }
                let _ = reply.send(self.snapshot(join));
            }
            Command::Merge {
                remote,
                answer_to_join,
                reply,
            } => {
                self.merge(*remote, answer_to_join);
                if let Some(reply) = reply {
                    let _ = reply.send(());
                }
            }
            Command::PushPullInSync => {
                let counters = &mut self.state.lock().counters;
                counters.push_pull_ok += 1;
                counters.push_pull_in_sync += 1;
            }
            Command::PushPullFailed => self.state.lock().counters.push_pull_failed += 1,
            Command::PushPullRateLimited => {
                self.state.lock().counters.push_pull_rate_limited += 1;
            }
            Command::PushPullUndecryptable => {
                self.state.lock().counters.packets_undecryptable += 1;
            }
            Command::Query { params, reply } => {
                let _ = reply.send(self.ask_query(params));
            }
            Command::Respond { origin, id, answer } => self.respond(origin, id, answer),
        }
    }

    // ---- foca plumbing ----

    /// Carries out everything foca asked for, then hands new events on. Repeats while
    /// notifications or relays cause more work.
    fn flush(&mut self) {
        loop {
            while let Some((to, data)) = self.runtime.next_send() {
                self.send(to.addr, &data);
            }
            let now = Instant::now();
            while let Some((after, timer)) = self.runtime.next_timer() {
                self.timers.schedule(now + after, Tick::Swim(timer));
            }
            let mut more = false;
            while let Some(notification) = self.runtime.next_notification() {
                self.on_notification(notification);
                more = true;
            }
            // Eager relay: a broadcast that was news goes out now, not on the next gossip.
            if std::mem::take(&mut self.state.lock().relay) {
                if let Err(e) = state::relay_eagerly(&mut self.foca, &mut self.runtime) {
                    debug!("foca broadcast: {e}");
                }
                more = true;
            }
            let joined = std::mem::take(&mut self.state.lock().joins_inbox);
            if !joined.is_empty() {
                debug!(
                    count = joined.len(),
                    "members announced by their own broadcast"
                );
                let members = joined.into_iter().map(Member::alive);
                if let Err(e) = self.foca.apply_many(members, true, &mut self.runtime) {
                    debug!("foca apply_many: {e}");
                }
                more = true;
            }
            let queries = std::mem::take(&mut self.state.lock().query_inbox);
            for q in queries {
                self.accept_query(q);
            }
            let reports = std::mem::take(&mut self.state.lock().suspect_inbox);
            for report in reports {
                self.on_suspect_report(report);
                more = true;
            }
            let released = std::mem::take(&mut self.state.lock().tree_inbox);
            for encoded in released {
                self.tree.broadcast(&encoded);
            }
            self.drain_tree();
            if !more && self.runtime.backlog() == 0 {
                break;
            }
        }
        if std::mem::take(&mut self.snapshot_now) {
            self.flush_snapshot();
        }
        let events = std::mem::take(&mut self.state.lock().outbox);
        for event in events {
            // The receiver lives as long as the agent; nothing to do if it is gone.
            let _ = self.events.send(event);
            self.handed_off = true;
        }
        self.resize();
    }

    fn send(&mut self, to: SocketAddr, data: &[u8]) {
        self.send_kind(Kind::Swim, to, data);
    }

    /// Sends what the broadcast tree asked to send and sets its timers; links it to more
    /// members first if it has too few peers.
    fn drain_tree(&mut self) {
        if self.tree.wants_peers() {
            let candidates: Vec<SocketAddr> =
                self.foca.iter_members().map(|m| m.id().addr).collect();
            self.tree.link(&candidates, &mut self.rng);
        }
        let mut body = std::mem::take(&mut self.tree_buf);
        let mut burst = std::mem::take(&mut self.tree_burst);
        burst.clear();
        {
            let keyring = self.handle.keyring.read();
            while let Some((to, out)) = self.tree.next_out() {
                body.clear();
                plumtree::encode(&out, &mut body);
                burst.push(to, |buf| {
                    wire::seal(Kind::Tree, &body, keyring.as_ref(), buf)
                });
            }
        }
        if !burst.is_empty() {
            let sent = burst.send(&self.socket, |i, e| {
                debug!(to = %burst.to(i), "udp send failed: {e}");
            });
            self.state.lock().counters.packets_sent += sent as u64;
        }
        self.tree_buf = body;
        self.tree_burst = burst;
        let now = Instant::now();
        while let Some((after, timer)) = self.tree.next_timer() {
            self.timers.schedule(now + after, Tick::Tree(timer));
        }
    }

    /// A user event or query pushed to us on the tree, or (`direct`) by its sender itself.
    fn on_tree_gossip(&mut self, from: SocketAddr, encoded: &[u8], direct: bool) {
        let msg = match Broadcast::decode(encoded) {
            Ok(msg @ (Broadcast::User { .. } | Broadcast::Query(_))) => msg,
            Ok(_) => return self.reject(from, "only user events and queries travel the tree"),
            Err(e) => return self.reject(from, &format!("malformed broadcast on the tree: {e}")),
        };
        let new = if direct {
            self.tree.on_direct(from, encoded)
        } else {
            self.tree.on_gossip(from, encoded)
        };
        if new {
            self.state.lock().receive(msg, SystemTime::now());
        }
        self.flush();
    }

    fn send_kind(&mut self, kind: Kind, to: SocketAddr, data: &[u8]) {
        self.send_buf.clear();
        wire::seal(
            kind,
            data,
            self.handle.keyring.read().as_ref(),
            &mut self.send_buf,
        );
        let mut sent = self.socket.try_send_to(&self.send_buf, to);
        if let Err(e) = &sent
            && refused::may_be_an_earlier_error(e)
        {
            // Perhaps an earlier packet's ICMP error, reported on this send instead of it.
            sent = self.socket.try_send_to(&self.send_buf, to);
        }
        match sent {
            Ok(_) => self.state.lock().counters.packets_sent += 1,
            // UDP is lossy anyway; SWIM retries on its own.
            Err(e) => debug!(%to, "udp send failed: {e}"),
        }
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeId>) {
        let now = SystemTime::now();
        match notification {
            OwnedNotification::MemberUp(id) => {
                info!(member = %id, "member alive");
                self.catch_up_if_back(&id);
                if let Some(s) = self.snapshot.as_mut() {
                    s.alive(&id.name, id.addr);
                }
                let events = self.state.lock().members.member_up(id, now);
                self.state.lock().outbox.extend(events);
            }
            OwnedNotification::MemberDown(id) => {
                self.suspicions.forget(&id);
                self.tree.remove_peer(&id.addr);
                if let Some(s) = self.snapshot.as_mut() {
                    s.not_alive(&id.name);
                }
                let events = self.state.lock().members.member_down(&id, now);
                info!(member = %id, "member down");
                self.state.lock().outbox.extend(events);
                // A process of the same name elsewhere, held back while this one was alive
                // (a host that moved), takes its place now.
                let successor = self
                    .foca
                    .iter_members()
                    .map(|m| m.id())
                    .find(|other| other.name == id.name && other.addr != id.addr)
                    .cloned();
                if let Some(next) = successor {
                    let events = self.state.lock().members.member_up(next, now);
                    self.state.lock().outbox.extend(events);
                }
            }
            OwnedNotification::Rename(old, new) => {
                let active = self.foca.iter_members().any(|m| m.id() == &new);
                if active {
                    self.catch_up_if_back(&new);
                }
                if active && let Some(s) = self.snapshot.as_mut() {
                    s.alive(&new.name, new.addr);
                }
                debug!(%old, %new, active, "member identity replaced");
                let events = self.state.lock().members.renamed(&old, new, active, now);
                self.state.lock().outbox.extend(events);
            }
            OwnedNotification::Active => {
                info!("connected to the cluster");
                if let Some(s) = self.snapshot.as_mut() {
                    s.left(false);
                }
                // The members just learned go to disk now, not up to half a second later:
                // a node that crashes right after joining still rejoins on its own.
                self.snapshot_now = true;
                self.connected = true;
                self.ever_joined = true;
                self.reannounce_backoff = REANNOUNCE_FIRST;
            }
            OwnedNotification::Idle => {
                self.connected = false;
                if self.leaving.is_none() {
                    warn!(
                        "no live members left: will keep announcing to join addresses and known members"
                    );
                    self.schedule_reannounce();
                }
            }
            OwnedNotification::Defunct => {
                if self.leaving.is_none() {
                    error!("this node was declared dead and cannot rejoin; restart the agent");
                }
            }
            OwnedNotification::Rejoin(id) => {
                warn!(identity = %id, "the cluster declared this node dead; rejoined as a new generation");
                self.state.lock().members.set_local_id(id);
            }
            OwnedNotification::ProbeFailed(_, id) => {
                self.state.lock().counters.probes_failed += 1;
                self.report_suspect(id);
            }
            // Filtered out by `SwimRuntime`.
            OwnedNotification::DataReceived(_) | OwnedNotification::DataSent(_) => {}
        }
    }

    /// foca's transmission counts and suspicion time depend on the cluster size.
    fn resize(&mut self) {
        let live = self.foca.num_members() + 1;
        if live != self.sized_for {
            self.sized_for = live;
            if let Err(e) = self.foca.set_config(self.config.profile.foca_config(live)) {
                warn!("could not resize foca's config for {live} members: {e}");
            }
        }
    }

    /// A member we had written off is back (a healed partition, a host back up): what each
    /// side sent meanwhile has left gossip, so exchange state with it now rather than at the
    /// next periodic push-pull. One such exchange a second is enough: all of the other side's
    /// events arrive through it.
    fn catch_up_if_back(&mut self, id: &NodeId) {
        let was_failed = self
            .state
            .lock()
            .members
            .get(&id.name)
            .is_some_and(|m| m.status == Status::Failed);
        let recently = self
            .last_catch_up
            .is_some_and(|t| t.elapsed() < CATCH_UP_SPACING);
        if was_failed && !recently && self.leaving.is_none() {
            self.catch_up_with(id.addr, "caught up with a member back from failed");
        }
    }

    // ---- suspicion confirmation (see suspicion.rs) ----

    /// The socket has errors queued: act on the refused packets among them.
    fn on_socket_errors(&mut self) {
        let mut refused = std::mem::take(&mut self.refused_buf);
        if let Err(e) = refused::drain(&self.socket, &mut refused) {
            self.stop_noticing_refusals(&e);
        }
        for addr in refused.drain(..) {
            self.on_refused(addr);
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

    /// Sends this period's heartbeat to the next member on the ring (see heartbeat.rs).
    fn heartbeat(&mut self) {
        let local = self.foca.identity().name.clone();
        let next = heartbeat::successor(
            &local,
            self.foca
                .iter_members()
                .map(|m| (m.id().name.as_str(), m.id().addr)),
        );
        if let Some(to) = next {
            self.send_kind(Kind::Heartbeat, to, &[]);
        }
        self.timers.schedule(
            Instant::now() + self.config.profile.heartbeat_interval(),
            Tick::Heartbeat,
        );
    }

    /// A packet to `addr` was refused by its host: if a member lives there, its agent is
    /// gone. That is reported like a failed probe of ours, once per incarnation.
    fn on_refused(&mut self, addr: SocketAddr) {
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
    fn report_suspect(&mut self, member: NodeId) {
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
    fn on_suspect_report(&mut self, report: SuspectReport) {
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
        let reporters = self.suspicions.report(&report, Instant::now().into_std());
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

    fn confirm_step(&mut self, member: NodeId, step: ProbeStep) {
        match step {
            ProbeStep::Ping(nonce) => {
                self.send_kind(Kind::Ping, member.addr, &wire::nonce_body(nonce));
                let next = Instant::now() + self.config.profile.confirm_ping_interval();
                self.timers.schedule(next, Tick::ConfirmSuspect(member));
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

    /// Applies a broadcast of ours and spreads it: user events and queries on the tree, the
    /// rest through foca.
    fn add_broadcast(&mut self, msg: Broadcast) {
        if let Err(e) = self.offer(msg, true) {
            // Sizes are checked before we get here; this is a bug, not bad input.
            error!("could not queue broadcast: {e}");
        }
        if let Err(e) = state::relay_eagerly(&mut self.foca, &mut self.runtime) {
            debug!("foca broadcast: {e}");
        }
        self.flush();
    }

    /// Applies a broadcast (ours if `own`, else learned by push-pull) and, if it was news
    /// here, queues it to spread: user events and queries by the broadcast tree (ours straight
    /// to every member in a small cluster), the rest in foca's backlog (foca applies it
    /// through our handler).
    fn offer(&mut self, msg: Broadcast, own: bool) -> Result<(), foca::Error> {
        let encoded = msg.encode();
        match msg {
            Broadcast::User { .. } | Broadcast::Query(_) => {
                if self.state.lock().receive(msg, SystemTime::now()) {
                    if own {
                        let members: Vec<SocketAddr> =
                            self.foca.iter_members().map(|m| m.id().addr).collect();
                        self.tree.broadcast_own(&encoded, members);
                    } else {
                        self.tree.broadcast(&encoded);
                    }
                }
                Ok(())
            }
            _ => self.foca.add_broadcast(&encoded).map(|_| ()),
        }
    }

    // ---- commands ----

    fn member_views(&self) -> Vec<MemberView> {
        self.state.lock().members.iter().map(|m| m.view()).collect()
    }

    fn info(&self) -> ClusterInfo {
        let state = self.state.lock();
        let local = state.members.local();
        ClusterInfo {
            node: local.id.name.clone(),
            advertise: local.id.addr,
            generation: local.id.generation,
            connected: self.connected,
            members_alive: state.members.count(Status::Alive),
            members_leaving: state.members.count(Status::Leaving),
            members_left: state.members.count(Status::Left),
            members_failed: state.members.count(Status::Failed),
            event_clock: state.event_clock.time(),
            max_event_bytes: self.config.max_event_bytes,
            profile: self.config.profile.as_str().to_string(),
            name_conflicts: state.members.conflicts().to_vec(),
            event_latency: state.event_latency.clone(),
            counters: Counters {
                tree_duplicates: self.tree.counters.duplicates,
                tree_grafts: self.tree.counters.grafts,
                ..state.counters.clone()
            },
        }
    }

    fn recent_events(&self) -> Vec<SeenEvent> {
        let state = self.state.lock();
        state
            .events
            .recent()
            .into_iter()
            .map(|seen| SeenEvent {
                name: seen.event.name.clone(),
                ltime: seen.event.ltime,
                origin: seen.event.origin.clone(),
                payload_bytes: seen.event.payload.len(),
                received_unix_ns: seen
                    .received
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            })
            .collect()
    }

    fn send_event(
        &mut self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    ) -> Result<u64, ClusterError> {
        message::check_event_name(&name).map_err(|reason| ClusterError::InvalidName {
            name: name.clone(),
            reason,
        })?;
        let size = name.len() + payload.len();
        if size > self.config.max_event_bytes {
            return Err(ClusterError::EventTooLarge {
                size,
                limit: self.config.max_event_bytes,
            });
        }
        let (ltime, origin) = {
            let mut state = self.state.lock();
            (
                state.event_clock.tick(),
                state.members.local().id.name.clone(),
            )
        };
        let sent_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.add_broadcast(Broadcast::User {
            event: UserEvent {
                ltime,
                name,
                payload,
                coalesce,
                origin,
            },
            sent_unix_ms,
        });
        Ok(ltime)
    }

    fn update_tags(&mut self, set: Tags, delete: Vec<String>) -> Result<Tags, ClusterError> {
        let current = self.state.lock().members.local().tags.clone();
        let mut tags = current.clone();
        for key in &delete {
            tags.remove(key);
        }
        for (key, value) in set {
            message::check_tag_key(&key).map_err(ClusterError::InvalidTags)?;
            tags.insert(key, value);
        }
        let size = message::tags_size(&tags);
        if size > message::MAX_TAGS_BYTES {
            return Err(ClusterError::InvalidTags(format!(
                "the tags take {size} bytes, the limit is {} bytes",
                message::MAX_TAGS_BYTES
            )));
        }
        if tags == current {
            return Ok(tags); // nothing changed: no broadcast, no member-update everywhere
        }
        let record = self.state.lock().members.local_tag_record(tags.clone());
        self.add_broadcast(Broadcast::Tags(record));
        Ok(tags)
    }

    fn force_leave(&mut self, node: String, prune: bool) -> Result<(), ClusterError> {
        let (target, by) = {
            let state = self.state.lock();
            let local = state.members.local().id.name.clone();
            let member = state
                .members
                .get(&node)
                .ok_or_else(|| ClusterError::UnknownMember(node.clone()))?;
            if member.id.name == local || matches!(member.status, Status::Alive | Status::Leaving) {
                return Err(ClusterError::MemberAlive(node));
            }
            if member.status == Status::Left && !prune {
                return Ok(());
            }
            (member.id.clone(), local)
        };
        self.add_broadcast(Broadcast::Leave(LeaveIntent {
            node: target.name,
            generation: target.generation,
            by,
            prune,
        }));
        Ok(())
    }

    fn begin_leave(&mut self, reply: oneshot::Sender<()>) {
        if let Some(leaving) = self.leaving.as_mut() {
            leaving.replies.push(reply);
            return;
        }
        info!("leaving the cluster");
        let intent = {
            let mut state = self.state.lock();
            state.members.set_local_leaving(SystemTime::now());
            let me = &state.members.local().id;
            LeaveIntent {
                node: me.name.clone(),
                generation: me.generation,
                by: me.name.clone(),
                prune: false,
            }
        };
        self.leaving = Some(Leaving {
            started: Instant::now(),
            replies: vec![reply],
        });
        self.add_broadcast(Broadcast::Leave(intent));
        self.timers
            .schedule(Instant::now() + LEAVE_POLL, Tick::LeaveCheck);
    }

    /// Finishes the leave once the announcement went out (or the wait is over).
    fn check_leave(&mut self) {
        let Some(leaving) = &self.leaving else {
            return;
        };
        let elapsed = leaving.started.elapsed();
        let alone = self.foca.num_members() == 0;
        let spread = self.foca.custom_broadcast_backlog() == 0 && elapsed >= LEAVE_MIN_SPREAD;
        if !(alone || spread || elapsed >= LEAVE_TIMEOUT) {
            self.timers
                .schedule(Instant::now() + LEAVE_POLL, Tick::LeaveCheck);
            return;
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            warn!("foca leave: {e}");
        }
        self.flush();
        if let Some(s) = self.snapshot.as_mut() {
            s.left(true);
        }
        self.flush_snapshot();
        if let Some(s) = self.snapshot.as_ref() {
            // The node is stopping: its last records must be on disk before the process ends.
            s.sync();
        }
        info!(elapsed_ms = elapsed.as_millis() as u64, "left the cluster");
        if let Some(leaving) = self.leaving.take() {
            for reply in leaving.replies {
                let _ = reply.send(());
            }
        }
        self.stopped = true;
    }

    fn snapshot(&self, join: bool) -> State {
        let state = self.state.lock();
        State {
            from: self.foca.identity().clone(),
            join,
            members: state.members.iter().cloned().collect(),
            swim: self.foca.iter_membership_state().cloned().collect(),
            event_ltime: state.event_clock.time(),
            events: state
                .events
                .recent()
                .into_iter()
                .map(|s| s.event.clone())
                .collect(),
        }
    }

    fn merge(&mut self, remote: State, answer_to_join: bool) {
        let local = self.foca.identity().clone();
        if remote.from == local {
            debug!("ignoring a push-pull exchange with ourselves");
            return;
        }
        if message::check_node_name(&remote.from.name).is_err() {
            warn!(from = ?remote.from, "ignoring push-pull state with an invalid node name");
            return;
        }
        let now = SystemTime::now();
        // What the peer knows goes through foca's broadcast path, exactly like a received
        // broadcast: what is news to us is applied *and* spread further with a fresh budget
        // (memberlist does the same with state learned by push-pull).
        let mut learned: Vec<Broadcast> = Vec::new();
        {
            let mut state = self.state.lock();
            state.event_clock.witness(remote.event_ltime);
            if answer_to_join && state.holding_events() {
                // Our first join: what the cluster sent before it is history, not for our
                // handlers. Events gossiped to us while the join was in flight are sorted now.
                state.release_events(Some(remote.event_ltime), now);
            }
            for member in &remote.members {
                if message::check_node_name(&member.id.name).is_err() {
                    continue;
                }
                // The peer's own record keeps its address: the peer is certainly alive (it
                // is talking to us), and nodes that have not heard of it yet add it to their
                // membership from this copy at once. This copy usually spreads ahead of the
                // one the peer sends itself (which then is a duplicate): without the address,
                // a joining node waited for foca's membership gossip, 0.3–0.5 s at 50 nodes.
                // Other members' records go without: they may be gone.
                learned.push(Broadcast::Tags(TagRecord {
                    addr: (member.id == remote.from).then_some(member.id.addr),
                    node: member.id.name.clone(),
                    version: member.tag_version,
                    tags: member.tags.clone(),
                }));
                if let Some(generation) = member.left_generation {
                    learned.push(Broadcast::Leave(LeaveIntent {
                        node: member.id.name.clone(),
                        generation,
                        by: member.id.name.clone(),
                        prune: false,
                    }));
                }
                state.members.learn_absent(member, now);
            }
            state.counters.push_pull_ok += 1;
        }
        learned.extend(remote.events.into_iter().map(|event| Broadcast::User {
            event,
            sent_unix_ms: 0,
        }));
        for item in learned {
            if let Err(e) = self.offer(item, false) {
                debug!(from = %remote.from, "ignoring an invalid item in push-pull state: {e}");
            }
        }
        // A "down" verdict about a member we hold active is left out: our own probes are the
        // fresher word on it (a dead one is soon found by them), whereas the peer may be
        // repeating what its side of a healed partition concluded — applying that would make
        // a live member flap to failed here until it renews its identity.
        let active: HashSet<NodeId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        let mut swim: Vec<Member<NodeId>> = remote
            .swim
            .into_iter()
            .filter(|m| message::check_node_name(&m.id().name).is_ok())
            .filter(|m| !(m.state() == foca::State::Down && active.contains(m.id())))
            .collect();
        swim.push(Member::alive(remote.from.clone()));
        if let Err(e) = self
            .foca
            .apply_many(swim.into_iter(), true, &mut self.runtime)
        {
            debug!("foca apply_many: {e}");
        }
        if answer_to_join && let Err(e) = self.foca.announce(remote.from.clone(), &mut self.runtime)
        {
            debug!("foca announce: {e}");
        }
        self.flush();
    }

    // ---- queries ----

    fn ask_query(
        &mut self,
        params: QueryParams,
    ) -> Result<mpsc::UnboundedReceiver<QueryUpdate>, ClusterError> {
        message::check_event_name(&params.name).map_err(ClusterError::InvalidQuery)?;
        let size = params.name.len() + params.payload.len();
        if size > self.config.max_event_bytes {
            return Err(ClusterError::EventTooLarge {
                size,
                limit: self.config.max_event_bytes,
            });
        }
        let filter = params
            .filter
            .compile()
            .map_err(ClusterError::InvalidQuery)?;
        let (expected, ltime, origin, alive) = {
            let mut state = self.state.lock();
            let expected: BTreeSet<String> = state
                .members
                .iter()
                .filter(|m| m.status == Status::Alive && filter.matches(&m.id.name, &m.tags))
                .map(|m| m.id.name.clone())
                .collect();
            let alive = state.members.count(Status::Alive);
            let origin = state.members.local().id.name.clone();
            (expected, state.query_clock.tick(), origin, alive)
        };
        let timeout = params
            .timeout
            .unwrap_or_else(|| self.config.profile.query_timeout(alive));
        let id = loop {
            let id = rand::RngExt::random::<u32>(&mut self.rng);
            if !self.asked.contains_key(&id) {
                break id;
            }
        };
        let msg = Broadcast::Query(QueryMsg {
            ltime,
            id,
            name: params.name,
            payload: params.payload,
            origin,
            reply_to: self.foca.identity().addr,
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            filter: params.filter,
            ack: params.ack,
        });
        let encoded = msg.encode();
        let size = encoded.len();
        if size > message::MAX_BROADCAST_BYTES {
            return Err(ClusterError::QueryTooLarge {
                size,
                limit: message::MAX_BROADCAST_BYTES,
            });
        }
        let (updates, receiver) = mpsc::unbounded_channel();
        let pending = PendingQuery::new(expected);
        let _ = updates.send(QueryUpdate::Started {
            expected: pending.expected(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        });
        let now = Instant::now();
        let reask_after = self.config.profile.query_reask_first();
        self.asked.insert(
            id,
            Asked {
                pending,
                updates,
                broadcast: encoded,
                deadline: now + timeout,
                reask_after,
            },
        );
        self.timers.schedule(now + timeout, Tick::QueryDeadline(id));
        self.timers
            .schedule(now + reask_after, Tick::QueryReask(id));
        // We apply our own copy like any node: ack and answer it.
        self.add_broadcast(msg);
        if self.asked.get(&id).is_some_and(|a| a.pending.complete()) {
            self.finish_query(id, false);
        }
        Ok(receiver)
    }

    fn on_query_reply(&mut self, reply: QueryReply) {
        let id = reply.id();
        let Some(asked) = self.asked.get_mut(&id) else {
            return; // finished or unknown: a late or stray reply
        };
        if let Some(update) = asked.pending.on_reply(reply) {
            let _ = asked.updates.send(update);
        }
        if asked.pending.complete() {
            self.finish_query(id, false);
        }
    }

    /// Sends our query again, straight to each expected node that has not answered: the
    /// broadcast may have missed it, or its answer may have been lost. A node that has the
    /// query already acks again, or sends its kept answer again; one that never got it runs
    /// it now. Then waits twice as long for the next round, until the query's deadline.
    fn reask(&mut self, id: u32) {
        let Some(asked) = self.asked.get_mut(&id) else {
            return; // finished
        };
        let silent = asked.pending.silent();
        let broadcast = asked.broadcast.clone();
        let now = Instant::now();
        asked.reask_after *= 2;
        if now + asked.reask_after < asked.deadline {
            self.timers
                .schedule(now + asked.reask_after, Tick::QueryReask(id));
        }
        let addrs: Vec<SocketAddr> = {
            let state = self.state.lock();
            silent
                .iter()
                .filter_map(|name| state.members.get(name))
                .filter(|m| m.status == Status::Alive)
                .map(|m| m.id.addr)
                .collect()
        };
        if !addrs.is_empty() {
            debug!(id, nodes = addrs.len(), "asking silent nodes again");
        }
        self.state.lock().counters.query_reasks += addrs.len() as u64;
        for addr in addrs {
            self.send_kind(Kind::Query, addr, &broadcast);
        }
    }

    /// A query sent straight to us because the asker has no answer from us yet.
    fn on_query_asked_again(&mut self, q: QueryMsg) {
        let key = (q.origin.clone(), q.id);
        if let Some(kept) = self.answered.get(&key) {
            let (to, reply) = (kept.reply_to, kept.reply.clone());
            self.send_kind(Kind::QueryReply, to, &reply);
            return;
        }
        if self.received.contains_key(&key) {
            // Still running here: say so again (the ack may be what was lost).
            if q.ack {
                let from = self.state.lock().members.local().id.name.clone();
                let ack = QueryReply::Ack { id: q.id, from };
                self.send_kind(Kind::QueryReply, q.reply_to, &ack.encode());
            }
            return;
        }
        // Never got it (or it is too old to remember): take it like a broadcast one, without
        // spreading it further.
        let news = self
            .state
            .lock()
            .receive(Broadcast::Query(q), SystemTime::now());
        if news {
            self.flush();
        }
    }

    fn finish_query(&mut self, id: u32, timed_out: bool) {
        if let Some(asked) = self.asked.remove(&id) {
            let _ = asked.updates.send(asked.pending.done(timed_out));
        }
    }

    /// A query reached us: ack it if we pass its filter, then answer it (built-in queries)
    /// or hand it to the handlers.
    fn accept_query(&mut self, q: QueryMsg) {
        let (name, tags) = {
            let state = self.state.lock();
            let me = state.members.local();
            (me.id.name.clone(), me.tags.clone())
        };
        match q.filter.compile() {
            Ok(filter) if filter.matches(&name, &tags) => {}
            Ok(_) => return,
            Err(e) => {
                debug!(query = %q.name, origin = %q.origin, "ignoring query with a bad filter: {e}");
                return;
            }
        }
        if q.ack {
            let ack = QueryReply::Ack {
                id: q.id,
                from: name.clone(),
            };
            self.send_kind(Kind::QueryReply, q.reply_to, &ack.encode());
        }
        let deadline = Instant::now() + Duration::from_millis(u64::from(q.timeout_ms));
        self.received.insert(
            (q.origin.clone(), q.id),
            Received {
                reply_to: q.reply_to,
                deadline,
            },
        );
        if q.name.starts_with(query::INTERNAL_PREFIX) {
            let answer = self.internal_query(&q.name, &q.payload);
            self.respond(q.origin, q.id, answer);
            return;
        }
        self.state.lock().outbox.push(Event::Query(QueryEvent {
            ltime: q.ltime,
            id: q.id,
            name: q.name,
            payload: q.payload,
            origin: q.origin,
        }));
    }

    /// rumor's own queries, answered here without handlers.
    fn internal_query(&mut self, name: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        let change = |make: fn(Key) -> KeyChange| {
            let text =
                std::str::from_utf8(payload).map_err(|_| "the key is not text".to_string())?;
            Key::parse(text).map(make).map_err(|e| e.to_string())
        };
        let keys = match name {
            query::PING => return Ok(b"pong".to_vec()),
            query::KEYS_LIST => {
                if self.handle.keyring.read().is_none() {
                    return Err("encryption is not enabled on this node".into());
                }
                self.handle.keyring.list()
            }
            query::KEYS_INSTALL => self.handle.keyring.change(&change(KeyChange::Install)?)?,
            query::KEYS_USE => self.handle.keyring.change(&change(KeyChange::Use)?)?,
            query::KEYS_REMOVE => self.handle.keyring.change(&change(KeyChange::Remove)?)?,
            other => return Err(format!("unknown internal query {other:?}")),
        };
        if name != query::KEYS_LIST {
            info!(query = name, keys = keys.len(), "keyring changed");
        }
        Ok(serde_json::to_vec(&keys).expect("a list of strings is JSON"))
    }

    /// Sends this node's answer to a query it received, cut to the response limit.
    fn respond(&mut self, origin: String, id: u32, answer: Result<Vec<u8>, String>) {
        let Some(received) = self.received.remove(&(origin.clone(), id)) else {
            debug!(%origin, id, "answer for a query that is over or unknown: dropped");
            return;
        };
        if received.deadline <= Instant::now() {
            debug!(%origin, id, "answer after the query's timeout: dropped");
            return;
        }
        let from = self.state.lock().members.local().id.name.clone();
        let reply = match answer {
            Ok(mut payload) => {
                let limit = self.config.max_response_bytes;
                let truncated = query::truncate_answer(&mut payload, limit);
                if truncated {
                    warn!(%origin, id, limit, "query answer longer than max_response_bytes: truncated");
                }
                QueryReply::Answer {
                    id,
                    from,
                    payload,
                    truncated,
                }
            }
            Err(reason) => QueryReply::NoAnswer { id, from, reason },
        };
        let encoded = reply.encode();
        self.send_kind(Kind::QueryReply, received.reply_to, &encoded);
        if self.answered.len() < MAX_KEPT_ANSWERS {
            self.answered.insert(
                (origin, id),
                Answered {
                    reply_to: received.reply_to,
                    reply: encoded,
                    deadline: received.deadline,
                },
            );
        }
    }

    // ---- periodic work ----

    fn periodic_push_pull(&mut self) {
        let interval = self
            .config
            .profile
            .push_pull_interval(self.foca.num_members() + 1);
        self.timers
            .schedule(Instant::now() + interval, Tick::PushPull);
        let peers: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let Some(&peer) = peers.choose(&mut self.rng) else {
            return;
        };
        let local = self.snapshot(false);
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let result = push_pull::exchange(peer, local, Mode::Digest, &handle).await;
            let cmd = match result {
                Ok(Some(remote)) => Command::Merge {
                    remote: Box::new(remote),
                    answer_to_join: false,
                    reply: None,
                },
                Ok(None) => Command::PushPullInSync,
                Err(e) => {
                    debug!(%peer, "periodic push-pull failed: {e}");
                    Command::PushPullFailed
                }
            };
            let _ = handle.commands.send(cmd).await;
        });
    }

    fn reap(&mut self) {
        self.timers
            .schedule(Instant::now() + REAP_INTERVAL, Tick::Reap);
        let events = self.state.lock().members.reap(
            SystemTime::now(),
            self.config.reconnect_timeout,
            self.config.tombstone_timeout,
        );
        if !events.is_empty() {
            info!(count = events.len(), "reaped members");
            self.state.lock().outbox.extend(events);
            self.flush();
        }
        // Tree peers that foca does not list as live (one that linked to us and died before
        // we ever heard of it, so no "down" came) are dropped; lost links are replaced.
        let live: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if self.tree.retain_peers(|peer| live.contains(peer)) {
            self.flush();
        }
    }

    /// Serf's reconnect: a push-pull with one random failed member. If it is reachable again
    /// (a partition healed, a host came back) the exchange merges both sides' state, events
    /// included, and foca takes it from there.
    fn reconnect(&mut self) {
        self.timers.schedule(
            Instant::now() + self.config.profile.reconnect_interval(),
            Tick::Reconnect,
        );
        if self.leaving.is_some() {
            return;
        }
        let failed: Vec<SocketAddr> = self
            .state
            .lock()
            .members
            .iter()
            .filter(|m| m.status == Status::Failed)
            .map(|m| m.id.addr)
            .collect();
        let Some(&addr) = failed.choose(&mut self.rng) else {
            return;
        };
        self.catch_up_with(addr, "reconnected to a failed member");
    }

    /// A push-pull with `addr` whose result is merged: members, tags and the events either
    /// side missed.
    fn catch_up_with(&mut self, addr: SocketAddr, what: &'static str) {
        self.last_catch_up = Some(Instant::now());
        let local = self.snapshot(false);
        let handle = self.handle.clone();
        tokio::spawn(async move {
            match push_pull::exchange(addr, local, Mode::Full, &handle).await {
                Ok(Some(remote)) => {
                    info!(%addr, "{what}");
                    let _ = handle
                        .commands
                        .send(Command::Merge {
                            remote: Box::new(remote),
                            answer_to_join: false,
                            reply: None,
                        })
                        .await;
                }
                Ok(None) => {} // a full exchange always answers with a state
                Err(e) => debug!(%addr, "reconnect failed: {e}"),
            }
        });
    }

    fn schedule_reannounce(&mut self) {
        if !self.reannounce_scheduled {
            self.reannounce_scheduled = true;
            self.timers
                .schedule(Instant::now() + self.reannounce_backoff, Tick::Reannounce);
        }
    }

    /// While cut off (foca stops its own timers when idle), try to join again through the
    /// configured addresses and every member we ever knew, backing off up to 30 s.
    fn reannounce(&mut self) {
        self.reannounce_scheduled = false;
        if self.connected || self.leaving.is_some() {
            return;
        }
        let mut targets: Vec<String> = self.config.join.clone();
        targets.extend(self.config.retry_join.iter().cloned());
        {
            let state = self.state.lock();
            let local = &state.members.local().id.name;
            targets.extend(
                state
                    .members
                    .iter()
                    .filter(|m| &m.id.name != local)
                    .map(|m| m.id.addr.to_string()),
            );
        }
        targets.dedup();
        if targets.is_empty() {
            return;
        }
        debug!(targets = targets.len(), "re-announcing");
        let handle = self.handle.clone();
        tokio::spawn(async move {
            for target in targets {
                if push_pull::join_one(&handle, &target).await.is_ok() {
                    info!(%target, "rejoined the cluster");
                    return;
                }
            }
        });
        self.reannounce_backoff = (self.reannounce_backoff * 2).min(REANNOUNCE_MAX);
        self.schedule_reannounce();
    }
}
