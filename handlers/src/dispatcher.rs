//! The [`Dispatcher`]: hands events to the configured handlers and runs them.
//!
//! Each handler has its own task and its own bounded queue. Different handlers run
//! concurrently, so a slow handler never delays another; one handler runs its events in order,
//! one at a time. `dispatch` never blocks: when a handler's queue is full the event is dropped
//! for that handler, counted, and logged (at most once a second per handler, with the count,
//! and again after the handler's next run). Handlers with a coalescing window hold member
//! events and coalescable user events for that window and run what [`Coalescer::flush`] makes
//! of them.
//!
//! Queries: [`Dispatcher::dispatch_query`] returns one receiver per handler that will run the
//! query ([`QueryRuns`]); [`QueryRuns::answer`] waits for them and gives the stdout of the
//! first to exit 0, which is this node's answer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::coalesce::Coalescer;
use crate::config::{ConfigError, HandlerConfig, validate_all};
use crate::contract::{self, LocalNode};
use crate::event::{Event, QueryEvent, UserEvent};
use crate::shell::{self, Invocation, RunResult};

/// Events a handler may have waiting before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// How often, at most, a handler's dropped events are logged while its queue stays full.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How much of stdout/stderr goes into one log line.
const LOG_TAIL: usize = 2048;

/// Runs the configured handlers for the events it is given. Cheap to clone; clones share the
/// handlers. Each handler is a task on the runtime given to [`Dispatcher::on`] (the one it is
/// created in, for [`Dispatcher::new`]); the dispatcher itself can be used from anywhere.
///
/// Dropping every clone closes the queues: each handler task still runs what was queued, then
/// ends.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the handlers' tasks run.
    runtime: tokio::runtime::Handle,
    handlers: Mutex<Vec<Handler>>,
    /// The user events run since the record last took them ([`Dispatcher::take_handled`]).
    new_runs: Arc<NewRuns>,
    local: watch::Sender<LocalNode>,
    queue_capacity: usize,
}

/// The dispatcher's side of one handler: its queue and what it shares with its task.
struct Handler {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
}

/// What a handler's task and the dispatcher both see.
struct Shared {
    config: Mutex<Arc<HandlerConfig>>,
    stats: Mutex<Stats>,
    /// The user events this handler has run, for the next restart.
    handled: Mutex<Option<HandledEvents>>,
    /// What it had run before this process started: events the cluster delivers again that
    /// are in it are skipped. Fixed at start: while running, the cluster itself delivers each
    /// event once.
    restored: Mutex<Option<HandledEvents>>,
}

/// A user event a handler ran: one line of the agent's record, appended as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandledRun {
    pub handler: String,
    pub ltime: u64,
    pub origin: String,
    pub name: String,
    /// The handler had no record before this run (added or replaced by a reload since the
    /// agent started): its record starts here, with nothing before it counted as run. A
    /// replaced handler's name may still carry its predecessor's mark in the file.
    pub first: bool,
}

/// Runs not yet taken by the record, and the signal that there are some (they wait until
/// taken: a dispatcher whose runs nobody takes keeps them, about 100 bytes each). Handing over
/// each run keeps the record's cost per run constant; copying every handler's whole set (up to
/// [`HANDLED_WINDOW`] events each) after each run made it grow with the window.
#[derive(Default)]
struct NewRuns {
    runs: Mutex<Vec<HandledRun>>,
    changed: tokio::sync::Notify,
}

/// How many Lamport times of handled events are remembered: the same window the cluster
/// deduplicates user events over (older events never reach a handler again anyway).
pub const HANDLED_WINDOW: u64 = 256;

/// The user events a handler has run recently, so that after a restart — when the cluster
/// delivers again what peers still hold — nothing runs twice and nothing that never ran is
/// skipped. An event is known by (Lamport time, origin, name): an origin stamps each of its
/// events with a new time. Delivery is not in Lamport order (an event can be in flight when a
/// node stops), so a single "newest time" would skip events; the set does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledEvents {
    /// Everything stamped before this counts as handled (for a handler added since the last
    /// run: it does not run the cluster's history).
    #[serde(default)]
    pub before: u64,
    /// (Lamport time, origin, name) of the events run, within the window.
    #[serde(default)]
    pub events: BTreeSet<(u64, String, String)>,
}

impl HandledEvents {
    /// Everything stamped before `ltime` counts as handled.
    pub fn before(ltime: u64) -> HandledEvents {
        HandledEvents {
            before: ltime,
            events: BTreeSet::new(),
        }
    }

    fn newest(&self) -> Option<u64> {
        self.events.last().map(|(ltime, _, _)| *ltime)
    }

    /// Whether `event` ran already (or is too old to be told apart).
    pub fn covers(&self, event: &UserEvent) -> bool {
        event.ltime < self.before
            || self
                .newest()
                .is_some_and(|n| event.ltime + HANDLED_WINDOW <= n)
            || self
                .events
                .contains(&(event.ltime, event.origin.clone(), event.name.clone()))
    }

    fn record(&mut self, event: &UserEvent) {
        self.insert(event.ltime, event.origin.clone(), event.name.clone());
    }

    /// Adds the event known by (Lamport time, origin, name) and forgets those that fell out of
    /// the window (for a record read back from disk).
    pub fn insert(&mut self, ltime: u64, origin: String, name: String) {
        self.events.insert((ltime, origin, name));
        // Ordered by Lamport time: what fell out of the window is at the front.
        let Some(newest) = self.newest() else { return };
        while self
            .events
            .first()
            .is_some_and(|(ltime, _, _)| ltime + HANDLED_WINDOW <= newest)
        {
            self.events.pop_first();
        }
    }
}

#[derive(Default)]
struct Stats {
    runs: u64,
    failures: u64,
    timeouts: u64,
    dropped: u64,
    /// Dropped since the last log line about drops.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
    running: bool,
    last: Option<LastRun>,
}

/// One queued run: an event, and for queries where to send the result.
struct Job {
    event: Event,
    reply: Option<oneshot::Sender<RunResult>>,
}

/// One handler as `rumor info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerStatus {
    pub name: String,
    /// The filter as text, e.g. `member-join,member-leave`.
    pub filter: String,
    pub command: String,
    /// Runs finished.
    pub runs: u64,
    /// Runs that did not exit 0 (timeouts included).
    pub failures: u64,
    pub timeouts: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events waiting in the queue.
    pub queued: usize,
    /// A run is in progress.
    pub running: bool,
    pub last: Option<LastRun>,
}

/// How a handler's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// When it ended, in milliseconds since the Unix epoch.
    pub finished_at_unix_ms: u64,
}

impl LastRun {
    fn of(result: &RunResult) -> LastRun {
        LastRun {
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            duration_ms: result.duration.as_millis() as u64,
            finished_at_unix_ms: result
                .finished_at()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

impl Dispatcher {
    /// Starts the handlers on the current Tokio runtime, each with a queue of
    /// [`DEFAULT_QUEUE_CAPACITY`] events. Panics outside a runtime.
    pub fn new(local: LocalNode, handlers: Vec<HandlerConfig>) -> Result<Dispatcher, ConfigError> {
        Dispatcher::on(tokio::runtime::Handle::current(), local, handlers)
    }

    /// Starts the handlers on `runtime` (a [`HandlerThread`](crate::HandlerThread)'s, in the
    /// agent), each with a queue of [`DEFAULT_QUEUE_CAPACITY`] events.
    pub fn on(
        runtime: tokio::runtime::Handle,
        local: LocalNode,
        handlers: Vec<HandlerConfig>,
    ) -> Result<Dispatcher, ConfigError> {
        Dispatcher::build(runtime, local, handlers, DEFAULT_QUEUE_CAPACITY)
    }

    /// Starts the handlers on the current runtime, each with a queue of `capacity` events (at
    /// least 1).
    pub fn with_queue_capacity(
        local: LocalNode,
        handlers: Vec<HandlerConfig>,
        capacity: usize,
    ) -> Result<Dispatcher, ConfigError> {
        Dispatcher::build(tokio::runtime::Handle::current(), local, handlers, capacity)
    }

    fn build(
        runtime: tokio::runtime::Handle,
        local: LocalNode,
        handlers: Vec<HandlerConfig>,
        capacity: usize,
    ) -> Result<Dispatcher, ConfigError> {
        validate_all(&handlers)?;
        let dispatcher = Dispatcher {
            inner: Arc::new(Inner {
                runtime,
                handlers: Mutex::new(Vec::new()),
                new_runs: Arc::default(),
                local: watch::Sender::new(local),
                queue_capacity: capacity.max(1),
            }),
        };
        let started = handlers.into_iter().map(|c| dispatcher.start(c)).collect();
        *lock(&dispatcher.inner.handlers) = started;
        Ok(dispatcher)
    }

    /// Queues the event for every handler it selects. Never blocks. A user event a handler
    /// already ran before a restart (see [`Dispatcher::restore_handled`]) is skipped.
    pub fn dispatch(&self, event: Event) {
        for handler in lock(&self.inner.handlers).iter() {
            let config = handler.shared.config();
            if let Event::User(user) = &event
                && lock(&handler.shared.restored)
                    .as_ref()
                    .is_some_and(|mark| mark.covers(user))
            {
                tracing::debug!(handler = %config.name, event = %user.name, ltime = user.ltime, "already handled before the restart: skipped");
                continue;
            }
            if let Some(event) = config.select(&event) {
                handler.enqueue(&config, Job { event, reply: None });
            }
        }
    }

    /// Queues a query for every handler it selects, and returns a way to wait for their results.
    /// Never blocks. If a handler's queue is full, the query is dropped (and counted) for that
    /// handler, and its result never comes.
    pub fn dispatch_query(&self, query: QueryEvent) -> QueryRuns {
        let event = Event::Query(query);
        let mut runs = Vec::new();
        for handler in lock(&self.inner.handlers).iter() {
            let config = handler.shared.config();
            if let Some(event) = config.select(&event) {
                let (reply, result) = oneshot::channel();
                let job = Job {
                    event,
                    reply: Some(reply),
                };
                if handler.enqueue(&config, job) {
                    runs.push((config.name.clone(), result));
                }
            }
        }
        QueryRuns { runs }
    }

    /// Replaces the handler set without losing queued events. A handler whose name and
    /// command are unchanged keeps its task and queue, and its runs from now on use the new
    /// settings (filter, tags, timeout, coalescing, env). A handler no longer in the set (or
    /// whose command changed) runs what it has queued and stops. New handlers start. On an
    /// invalid set nothing changes.
    pub fn reload(&self, handlers: Vec<HandlerConfig>) -> Result<(), ConfigError> {
        validate_all(&handlers)?;
        let mut current = lock(&self.inner.handlers);
        let mut old = std::mem::take(&mut *current);
        for config in handlers {
            let kept = old
                .iter()
                .position(|h| {
                    let c = h.shared.config();
                    c.name == config.name && c.command == config.command
                })
                .map(|i| old.remove(i));
            match kept {
                Some(handler) => {
                    *lock(&handler.shared.config) = Arc::new(config);
                    current.push(handler);
                }
                None => {
                    tracing::info!(handler = %config.name, command = %config.command, "handler added");
                    current.push(self.start(config));
                }
            }
        }
        for removed in old {
            let config = removed.shared.config();
            tracing::info!(
                handler = %config.name,
                queued = removed.queued(),
                "handler removed; it finishes its queued events, then stops"
            );
            // Dropping the queue's sender lets the task drain the queue and end.
        }
        Ok(())
    }

    /// The handlers' counters and last runs, in configuration order.
    pub fn status(&self) -> Vec<HandlerStatus> {
        lock(&self.inner.handlers)
            .iter()
            .map(|handler| {
                let config = handler.shared.config();
                let stats = lock(&handler.shared.stats);
                HandlerStatus {
                    name: config.name.clone(),
                    filter: config.filter.to_string(),
                    command: config.command.clone(),
                    runs: stats.runs,
                    failures: stats.failures,
                    timeouts: stats.timeouts,
                    dropped: stats.dropped,
                    queued: handler.queued(),
                    running: stats.running,
                    last: stats.last.clone(),
                }
            })
            .collect()
    }

    /// Tells the handlers about the local node's new name or tags (`SERF_SELF_*`,
    /// Waits until no handler is running or has events queued, at most `limit` (so a final
    /// record of what ran is complete at shutdown). Returns whether they went idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let busy = lock(&self.inner.handlers)
                .iter()
                .any(|h| h.queued() > 0 || lock(&h.shared.stats).running);
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until handlers have run user events the caller has not taken yet, and takes them
    /// (so the caller can persist them at once: a crash right after a run must not lose it).
    pub async fn handled_runs(&self) -> Vec<HandledRun> {
        loop {
            let runs = self.take_handled();
            if !runs.is_empty() {
                return runs;
            }
            self.inner.new_runs.changed.notified().await;
        }
    }

    /// Takes the runs [`Dispatcher::handled_runs`] has not returned yet, without waiting.
    pub fn take_handled(&self) -> Vec<HandledRun> {
        std::mem::take(&mut *lock(&self.inner.new_runs.runs))
    }

    /// Handlers with a record plus the events they remember: the lines [`Dispatcher::handled`]
    /// takes written out, without copying it.
    pub fn handled_size(&self) -> usize {
        lock(&self.inner.handlers)
            .iter()
            .filter_map(|h| lock(&h.shared.handled).as_ref().map(|m| 1 + m.events.len()))
            .sum()
    }

    /// What each handler has run, to persist across restarts (handlers that ran no user event
    /// yet and had no restored mark are absent).
    pub fn handled(&self) -> BTreeMap<String, HandledEvents> {
        lock(&self.inner.handlers)
            .iter()
            .filter_map(|h| {
                let mark = lock(&h.shared.handled).clone()?;
                Some((h.shared.config().name.clone(), mark))
            })
            .collect()
    }

    /// Restores what the handlers ran before a restart; handlers without a saved mark get
    /// `default` (after a restart: "everything before the restored clock", so a handler added
    /// since does not run the cluster's history). Call before dispatching anything.
    pub fn restore_handled(
        &self,
        mut marks: BTreeMap<String, HandledEvents>,
        default: Option<HandledEvents>,
    ) {
        for h in lock(&self.inner.handlers).iter() {
            let name = h.shared.config().name.clone();
            let mark = marks.remove(&name).or_else(|| default.clone());
            *lock(&h.shared.handled) = mark.clone();
            *lock(&h.shared.restored) = mark;
        }
    }

    /// `SERF_TAG_*`); runs that start from now on see them.
    pub fn set_local(&self, local: LocalNode) {
        self.inner.local.send_replace(local);
    }

    fn start(&self, config: HandlerConfig) -> Handler {
        let (queue, jobs) = mpsc::channel(self.inner.queue_capacity);
        let shared = Arc::new(Shared {
            config: Mutex::new(Arc::new(config)),
            stats: Mutex::new(Stats::default()),
            handled: Mutex::new(None),
            restored: Mutex::new(None),
        });
        self.inner.runtime.spawn(handler_task(
            jobs,
            shared.clone(),
            self.inner.local.subscribe(),
            self.inner.new_runs.clone(),
        ));
        Handler { shared, queue }
    }
}

impl Handler {
    /// Queues a job, or drops and counts it when the queue is full. Whether it was queued.
    fn enqueue(&self, config: &HandlerConfig, job: Job) -> bool {
        match self.queue.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => {
                let mut stats = lock(&self.shared.stats);
                stats.dropped += 1;
                stats.unlogged_drops += 1;
                let now = Instant::now();
                if stats
                    .last_drop_log
                    .is_none_or(|at| now.duration_since(at) >= DROP_LOG_INTERVAL)
                {
                    stats.last_drop_log = Some(now);
                    tracing::warn!(
                        handler = %config.name,
                        event = %describe(&job.event),
                        dropped = stats.unlogged_drops,
                        dropped_total = stats.dropped,
                        capacity = self.queue.max_capacity(),
                        "handler queue full: dropped {} event(s); the handler is not keeping up",
                        stats.unlogged_drops
                    );
                    stats.unlogged_drops = 0;
                }
                false
            }
            Err(TrySendError::Closed(job)) => {
                // Only if the task ended early, which it does not do while the sender lives.
                tracing::error!(
                    handler = %config.name,
                    event = %describe(&job.event),
                    "handler task is gone; event not run"
                );
                lock(&self.shared.stats).dropped += 1;
                false
            }
        }
    }

    fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

impl Shared {
    fn config(&self) -> Arc<HandlerConfig> {
        lock(&self.config).clone()
    }

    fn record(&self, result: &RunResult) {
        let mut stats = lock(&self.stats);
        stats.running = false;
        stats.runs += 1;
        if !result.success() {
            stats.failures += 1;
        }
        if result.timed_out {
            stats.timeouts += 1;
        }
        stats.last = Some(LastRun::of(result));
    }

    /// Logs drops not logged yet (the queue has room again after a run).
    fn log_unlogged_drops(&self, name: &str) {
        let mut stats = lock(&self.stats);
        if stats.unlogged_drops > 0 {
            tracing::warn!(
                handler = %name,
                dropped = stats.unlogged_drops,
                dropped_total = stats.dropped,
                "handler queue was full: dropped {} more event(s)",
                stats.unlogged_drops
            );
            stats.unlogged_drops = 0;
            stats.last_drop_log = Some(Instant::now());
        }
    }
}

/// One handler's loop: takes jobs in order, holds coalescable events for the window, runs one
/// at a time. Ends when the queue is closed and drained, after running what is still held.
async fn handler_task(
    mut jobs: mpsc::Receiver<Job>,
    shared: Arc<Shared>,
    local: watch::Receiver<LocalNode>,
    new_runs: Arc<NewRuns>,
) {
    let mut coalescer = Coalescer::new();
    let mut window_end: Option<tokio::time::Instant> = None;
    loop {
        let config = shared.config();
        if config.coalesce.is_none() && !coalescer.is_empty() {
            // Coalescing was switched off by a reload: run what was held.
            window_end = None;
            for event in coalescer.flush() {
                run(&shared, &local, &new_runs, event, None).await;
            }
        }
        let job = tokio::select! {
            job = jobs.recv() => job,
            _ = sleep_until(window_end), if window_end.is_some() => {
                window_end = None;
                for event in coalescer.flush() {
                    run(&shared, &local, &new_runs, event, None).await;
                }
                continue;
            }
        };
        let Some(job) = job else { break };
        match (config.coalesce, job.reply) {
            (Some(window), None) => match coalescer.push(job.event) {
                Some(event) => run(&shared, &local, &new_runs, event, None).await,
                None => {
                    window_end.get_or_insert_with(|| tokio::time::Instant::now() + window);
                }
            },
            (_, reply) => run(&shared, &local, &new_runs, job.event, reply).await,
        }
    }
    for event in coalescer.flush() {
        run(&shared, &local, &new_runs, event, None).await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs one event through the handler's command, records and logs the result, and sends it to
/// the query's waiter if there is one.
async fn run(
    shared: &Shared,
    local: &watch::Receiver<LocalNode>,
    new_runs: &NewRuns,
    event: Event,
    reply: Option<oneshot::Sender<RunResult>>,
) {
    let config = shared.config();
    let mut env = contract::environment(&event, &local.borrow());
    env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let invocation = Invocation {
        command: config.command.clone(),
        env,
        stdin: contract::stdin(&event),
        timeout: config.timeout,
    };
    lock(&shared.stats).running = true;
    let result = shell::run(invocation).await;
    shared.record(&result);
    if let Event::User(user) = &event {
        // Ran (whatever its exit code): a restart must not run it again.
        let first = {
            let mut handled = lock(&shared.handled);
            let first = handled.is_none();
            handled
                .get_or_insert_with(HandledEvents::default)
                .record(user);
            first
        };
        lock(&new_runs.runs).push(HandledRun {
            handler: config.name.clone(),
            ltime: user.ltime,
            origin: user.origin.clone(),
            name: user.name.clone(),
            first,
        });
        new_runs.changed.notify_one();
    }
    log_result(&config, &event, &result);
    if let Some(reply) = reply {
        // The waiter may have given up; that is fine.
        let _ = reply.send(result);
    }
    shared.log_unlogged_drops(&config.name);
}

fn log_result(config: &HandlerConfig, event: &Event, result: &RunResult) {
    let event = describe(event);
    let duration_ms = result.duration.as_millis() as u64;
    tracing::debug!(
        handler = %config.name,
        %event,
        duration_ms,
        exit_code = ?result.exit_code,
        truncated = result.truncated,
        stdout = %result.stdout_tail(LOG_TAIL),
        stderr = %result.stderr_tail(LOG_TAIL),
        "handler ran: {result}"
    );
    if result.timed_out {
        tracing::warn!(
            handler = %config.name,
            %event,
            timeout = ?config.timeout,
            stderr = %result.stderr_tail(LOG_TAIL),
            "handler timed out after {:?}; its process group was killed",
            config.timeout
        );
    } else if !result.success() {
        tracing::warn!(
            handler = %config.name,
            %event,
            command = %config.command,
            exit_code = ?result.exit_code,
            signal = ?result.signal,
            duration_ms,
            stderr = %result.stderr_tail(LOG_TAIL),
            "handler failed: {result}"
        );
    }
}

/// An event in a few words for a log line: `member-join (3 members)`, `user:deploy`.
fn describe(event: &Event) -> String {
    match event {
        Event::Member { kind, members } if members.len() == 1 => {
            format!("{kind} ({})", members[0].name)
        }
        Event::Member { kind, members } => format!("{kind} ({} members)", members.len()),
        Event::User(user) => format!("user:{} (ltime {})", user.name, user.ltime),
        Event::Query(query) => format!("query:{} (ltime {})", query.name, query.ltime),
    }
}

/// The runs a query was queued for, one per handler that selected it.
#[derive(Debug)]
pub struct QueryRuns {
    runs: Vec<(String, oneshot::Receiver<RunResult>)>,
}

impl QueryRuns {
    /// No handler will run the query: this node has no answer to give.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many handlers will run the query.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// The names of the handlers that will run the query.
    pub fn handlers(&self) -> impl Iterator<Item = &str> {
        self.runs.iter().map(|(name, _)| name.as_str())
    }

    /// This node's answer: the stdout of the first run (in the order they finish) that exits
    /// 0, possibly empty. `None` when no handler ran the query or none exited 0. Waits at
    /// most as long as the handlers' timeouts; wrap it in `tokio::time::timeout` for the
    /// query's deadline.
    pub async fn answer(self) -> Option<Vec<u8>> {
        self.first_success().await.map(|(_, result)| result.stdout)
    }

    /// The first run (in the order they finish) that exits 0, with its handler's name.
    pub async fn first_success(self) -> Option<(String, RunResult)> {
        let mut pending = self.runs;
        poll_fn(|cx| {
            let mut i = 0;
            while i < pending.len() {
                match Pin::new(&mut pending[i].1).poll(cx) {
                    Poll::Ready(Ok(result)) if result.success() => {
                        let (name, _) = pending.swap_remove(i);
                        return Poll::Ready(Some((name, result)));
                    }
                    // Failed, or dropped (queue full, agent shutting down): no answer from it.
                    Poll::Ready(_) => {
                        pending.swap_remove(i);
                    }
                    Poll::Pending => i += 1,
                }
            }
            if pending.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The receivers themselves, for a caller that wants every result.
    pub fn into_receivers(self) -> Vec<(String, oneshot::Receiver<RunResult>)> {
        self.runs
    }
}

/// Locks a mutex, ignoring poisoning: the data behind these locks stays consistent even if a
/// holder panicked (plain counters and replaced values).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
