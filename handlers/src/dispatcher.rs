//! The [`Dispatcher`]: hands events to the configured handlers and runs them.
//!
//! Each handler has its own task and its own bounded queue. Different handlers run
//! concurrently, so a slow handler never delays another, unless they share a serial group
//! (`serial.rs`), whose handlers take turns as all of Serf's do; one handler runs its
//! events in order, one at a time. `dispatch` never blocks: when a handler's queue is full the event is dropped
//! for that handler, counted, and logged (at most once a second per handler, with the count,
//! and again after the handler's next run). Handlers with a coalescing window hold member
//! events and coalescable user events for that window and run what [`Coalescer::flush`] makes
//! of them.
//!
//! Each run goes to the handler's [`Runtime`] (made once from its [`RuntimeConfig`] when the
//! handler starts), which stops it at the handler's timeout; what a runtime does is its own
//! business ([`crate::runtime`]). Around the runs the dispatcher keeps each handler's counters
//! ([`crate::status`]) and the user events it ran ([`crate::handled_events`]). A run that
//! could not start ([`RunResult::started`] false) is tried again with a backoff for as long as
//! the handler's timeout, counted each time, and never recorded as handled. Queries:
//! [`Dispatcher::dispatch_query`] returns one receiver per handler that will run the query
//! ([`QueryRuns`], which gives this node's answer).
//!
//! [`RuntimeConfig`]: crate::RuntimeConfig

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use crate::coalesce::Coalescer;
use crate::config::{ConfigError, HandlerConfig, validate_all};
use crate::contract::LocalNode;
use crate::event::{Event, QueryEvent};
use crate::handled_events::{HandledEvents, HandledRun, HandlerHistory, NewRuns};
use crate::lock;
use crate::members::Members;
use crate::query_runs::QueryRuns;
use crate::runtime::RuntimeContext;
use crate::runtime::{Run, RunResult, Runtime, Start};
use crate::serial::SerialGroups;
use crate::status::{HandlerStatus, Stats};
use crate::template::TemplateGroups;

/// Events a handler may have waiting before new ones are dropped.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// How much of stdout/stderr goes into one log line.
const LOG_TAIL: usize = 2048;

/// The first wait before a run that could not start is tried again.
pub const START_RETRY_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between two attempts at starting a run.
pub const START_RETRY_MOST: Duration = Duration::from_secs(5);

/// Runs the configured handlers for the events it is given. Cheap to clone; clones share the
/// handlers. Each handler is a task on the Tokio runtime given to [`Dispatcher::on`] (the one it is
/// created in, for [`Dispatcher::new`]); the dispatcher itself can be used from anywhere.
///
/// Dropping every clone closes the queues: each handler task still runs what was queued, then
/// ends.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// The Tokio runtime the handlers' tasks run on.
    tasks: tokio::runtime::Handle,
    handlers: Mutex<Vec<Handler>>,
    /// The user events run since the record last took them ([`Dispatcher::take_handled`]).
    new_runs: Arc<NewRuns>,
    local: watch::Sender<LocalNode>,
    /// The member list, for runtimes that render cluster state; `None` until the agent
    /// publishes one.
    members: watch::Sender<Option<Members>>,
    node: watch::Sender<Option<Arc<dyn crate::node_control::NodeControl>>>,
    /// Templates that share a reload command.
    templates: Arc<TemplateGroups>,
    queue_capacity: usize,
    /// The turns of the handlers' serial groups.
    groups: Arc<SerialGroups>,
}

/// The dispatcher's side of one handler: its queue and what it shares with its task.
struct Handler {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
    runtime: Arc<dyn Runtime>,
}

/// What a handler's task and the dispatcher both see.
struct Shared {
    config: Mutex<Arc<HandlerConfig>>,
    stats: Mutex<Stats>,
    /// The user events it ran, and those it ran before the restart.
    history: HandlerHistory,
}

/// What a handler's task is asked to do, in queue order.
enum Job {
    /// Run an event; for queries, send the result to `reply`.
    Run {
        event: Event,
        reply: Option<oneshot::Sender<RunResult>>,
    },
    /// Run what coalescing holds now, without waiting for the window to close.
    Flush,
}

impl Job {
    /// The job in a few words for a log line.
    fn describe(&self) -> String {
        match self {
            Job::Run { event, .. } => describe(event),
            Job::Flush => "the events coalescing holds".to_string(),
        }
    }
}

impl Dispatcher {
    /// Starts the handlers on the current Tokio runtime, each with a queue of
    /// [`DEFAULT_QUEUE_CAPACITY`] events. Panics outside a runtime.
    pub fn new(local: LocalNode, handlers: Vec<HandlerConfig>) -> Result<Dispatcher, ConfigError> {
        Dispatcher::on(tokio::runtime::Handle::current(), local, handlers)
    }

    /// Starts the handlers on the Tokio runtime `runtime` (a
    /// [`HandlerThread`](crate::HandlerThread)'s, in the agent), each with a queue of
    /// [`DEFAULT_QUEUE_CAPACITY`] events.
    pub fn on(
        runtime: tokio::runtime::Handle,
        local: LocalNode,
        handlers: Vec<HandlerConfig>,
    ) -> Result<Dispatcher, ConfigError> {
        Dispatcher::build(runtime, local, handlers, DEFAULT_QUEUE_CAPACITY)
    }

    /// Starts the handlers on the current Tokio runtime, each with a queue of `capacity` events (at
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
                tasks: runtime,
                handlers: Mutex::new(Vec::new()),
                new_runs: Arc::default(),
                local: watch::Sender::new(local),
                members: watch::Sender::new(None),
                node: watch::Sender::new(None),
                templates: Arc::default(),
                queue_capacity: capacity.max(1),
                groups: Arc::default(),
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
                && handler.shared.history.skips(user)
            {
                tracing::debug!(handler = %config.name, event = %user.name, ltime = user.ltime, "already handled before the restart: skipped");
                continue;
            }
            if let Some(event) = config.select(&event) {
                handler.enqueue(&config, Job::Run { event, reply: None });
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
                let job = Job::Run {
                    event,
                    reply: Some(reply),
                };
                if handler.enqueue(&config, job) {
                    runs.push((config.name.clone(), result));
                }
            }
        }
        QueryRuns::new(runs)
    }

    /// Replaces the handler set without losing queued events. A handler whose name and
    /// runtime (a shell handler's command) are unchanged keeps its task, queue and runtime, and
    /// its runs from now on use the new settings (filter, tags, timeout, coalescing, env). A
    /// handler no longer in the set (or whose runtime changed) runs what it has queued and
    /// stops. New handlers start. On an invalid set nothing changes.
    pub fn reload(&self, handlers: Vec<HandlerConfig>) -> Result<(), ConfigError> {
        validate_all(&handlers)?;
        let mut current = lock(&self.inner.handlers);
        let mut old = std::mem::take(&mut *current);
        for config in handlers {
            let kept = old
                .iter()
                .position(|h| {
                    let c = h.shared.config();
                    c.name == config.name && c.runtime == config.runtime
                })
                .map(|i| old.remove(i));
            match kept {
                Some(handler) => {
                    *lock(&handler.shared.config) = Arc::new(config);
                    current.push(handler);
                }
                None => {
                    tracing::info!(handler = %config.name, command = %config.runtime, "handler added");
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
                    command: config.runtime.to_string(),
                    runs: stats.runs,
                    failures: stats.failures,
                    timeouts: stats.timeouts,
                    dropped: stats.dropped,
                    start_failures: stats.start_failures,
                    queued: handler.queued(),
                    running: stats.running,
                    last: stats.last.clone(),
                    runtime: handler.runtime.details(),
                }
            })
            .collect()
    }

    /// Waits until no handler is running or has events queued, at most `limit` (so a final
    /// record of what ran is complete at shutdown). Returns whether they went idle.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let busy = lock(&self.inner.handlers).iter().any(|h| {
                let stats = lock(&h.shared.stats);
                h.queued() > 0 || stats.running || stats.waiting_turn
            });
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
        self.inner.new_runs.next().await
    }

    /// Takes the runs [`Dispatcher::handled_runs`] has not returned yet, without waiting.
    pub fn take_handled(&self) -> Vec<HandledRun> {
        self.inner.new_runs.take()
    }

    /// Handlers with a record plus the events they remember: the lines [`Dispatcher::handled`]
    /// takes written out, without copying it.
    pub fn handled_size(&self) -> usize {
        lock(&self.inner.handlers)
            .iter()
            .map(|h| h.shared.history.size())
            .sum()
    }

    /// What each handler has run, to persist across restarts (handlers that ran no user event
    /// yet and had no restored mark are absent).
    pub fn handled(&self) -> BTreeMap<String, HandledEvents> {
        lock(&self.inner.handlers)
            .iter()
            .filter_map(|h| {
                let mark = h.shared.history.record()?;
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
            h.shared
                .history
                .restore(marks.remove(&name).or_else(|| default.clone()));
        }
    }

    /// Tells the handlers about the local node's new name or tags (`SERF_SELF_*`,
    /// `SERF_TAG_*`); runs that start from now on see them.
    pub fn set_local(&self, local: LocalNode) {
        self.inner.local.send_replace(local);
    }

    /// Has every handler run what its coalescing window holds now, rather than when the
    /// window closes (a stopping agent calls it before [`Dispatcher::wait_idle`], so the local
    /// node's own `member-leave` runs before the process ends, as in Serf). Never blocks; a
    /// handler whose queue is full runs what it holds when the queue closes.
    pub fn flush_held(&self) {
        for handler in lock(&self.inner.handlers).iter() {
            // Full: the events ahead of it run first, and the held ones when the queue closes.
            let _ = handler.queue.try_send(Job::Flush);
        }
    }

    /// Publishes the cluster's member list (every member, the local one included) to the
    /// runtimes that render it; a list equal to the current one changes nothing.
    pub fn set_members(&self, members: Members) {
        self.inner.members.send_if_modified(|current| {
            if current.as_ref().is_some_and(|c| *c == members) {
                return false;
            }
            *current = Some(members);
            true
        });
    }

    /// Hands the runtimes that change their node (a docker deploy's tags) what they may do;
    /// they wait for it, so it may come after the handlers started.
    pub fn set_node_control(&self, node: Arc<dyn crate::node_control::NodeControl>) {
        self.inner.node.send_replace(Some(node));
    }

    fn start(&self, config: HandlerConfig) -> Handler {
        let (queue, jobs) = mpsc::channel(self.inner.queue_capacity);
        let runtime = config.runtime.runtime(
            &config.name,
            &RuntimeContext {
                members: self.inner.members.subscribe(),
                local: self.inner.local.subscribe(),
                groups: self.inner.templates.clone(),
                node: self.inner.node.subscribe(),
            },
        );
        let shared = Arc::new(Shared {
            config: Mutex::new(Arc::new(config)),
            stats: Mutex::new(Stats::default()),
            history: HandlerHistory::default(),
        });
        self.inner.tasks.spawn(handler_task(
            jobs,
            HandlerRuns {
                shared: shared.clone(),
                runtime: runtime.clone(),
                local: self.inner.local.subscribe(),
                new_runs: self.inner.new_runs.clone(),
                groups: self.inner.groups.clone(),
            },
        ));
        Handler {
            shared,
            queue,
            runtime,
        }
    }
}

impl Handler {
    /// Queues a job, or drops and counts it when the queue is full. Whether it was queued.
    fn enqueue(&self, config: &HandlerConfig, job: Job) -> bool {
        match self.queue.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => {
                let mut stats = lock(&self.shared.stats);
                if let Some(dropped) = stats.dropped(Instant::now()) {
                    tracing::warn!(
                        handler = %config.name,
                        event = %job.describe(),
                        dropped,
                        dropped_total = stats.dropped,
                        capacity = self.queue.max_capacity(),
                        "handler queue full: dropped {dropped} event(s); the handler is not keeping up",
                    );
                }
                false
            }
            Err(TrySendError::Closed(job)) => {
                // Only if the task ended early, which it does not do while the sender lives.
                tracing::error!(
                    handler = %config.name,
                    event = %job.describe(),
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

    /// Logs drops not logged yet (the queue has room again after a run).
    fn log_unlogged_drops(&self, name: &str) {
        let mut stats = lock(&self.stats);
        if let Some(dropped) = stats.unlogged_drops(Instant::now()) {
            tracing::warn!(
                handler = %name,
                dropped,
                dropped_total = stats.dropped,
                "handler queue was full: dropped {dropped} more event(s)",
            );
        }
    }
}

/// What a handler's task runs its events with.
struct HandlerRuns {
    shared: Arc<Shared>,
    runtime: Arc<dyn Runtime>,
    local: watch::Receiver<LocalNode>,
    new_runs: Arc<NewRuns>,
    groups: Arc<SerialGroups>,
}

/// One handler's loop: takes jobs in order, holds coalescable events for the window, runs one
/// at a time. Ends when the queue is closed and drained, after running what is still held.
async fn handler_task(mut jobs: mpsc::Receiver<Job>, handler: HandlerRuns) {
    handler.run_start().await;
    let mut coalescer = Coalescer::new();
    let mut window = Window::default();
    loop {
        let config = handler.shared.config();
        if config.coalesce.is_none() && !coalescer.is_empty() {
            // Coalescing was switched off by a reload: run what was held.
            window = Window::default();
            handler.run_held(&mut coalescer).await;
        }
        let due = window.due();
        let job = tokio::select! {
            job = jobs.recv() => job,
            _ = sleep_until(due), if due.is_some() => {
                window = Window::default();
                handler.run_held(&mut coalescer).await;
                continue;
            }
        };
        let Some(job) = job else { break };
        match job {
            Job::Flush => {
                window = Window::default();
                handler.run_held(&mut coalescer).await;
            }
            Job::Run { event, reply: None } if config.coalesce.is_some() => {
                match coalescer.push(event) {
                    Some(event) => handler.run(event, None).await,
                    None => window.held(&config, tokio::time::Instant::now()),
                }
            }
            Job::Run { event, reply } => handler.run(event, reply).await,
        }
    }
    handler.run_held(&mut coalescer).await;
}

/// When the coalescing window that holds events closes: at the end of the window that opened
/// with the first held event, or earlier once no event came for the quiet period (Serf's
/// "quiescent period"), if the handler has one.
#[derive(Debug, Default)]
struct Window {
    end: Option<tokio::time::Instant>,
    quiet_end: Option<tokio::time::Instant>,
}

impl Window {
    /// An event was held at `now`: opens the window if it was closed, restarts the quiet period.
    fn held(&mut self, config: &HandlerConfig, now: tokio::time::Instant) {
        if let Some(length) = config.coalesce {
            self.end.get_or_insert(now + length);
        }
        self.quiet_end = config.coalesce_quiet.map(|quiet| now + quiet);
    }

    /// When held events are to run; `None` while nothing is held.
    fn due(&self) -> Option<tokio::time::Instant> {
        match (self.end, self.quiet_end) {
            (Some(end), Some(quiet)) => Some(end.min(quiet)),
            (end, None) => end,
            (None, quiet) => quiet,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl HandlerRuns {
    /// Runs what the coalescer holds, in the order its flush gives.
    async fn run_held(&self, coalescer: &mut Coalescer) {
        for event in coalescer.flush() {
            self.run(event, None).await;
        }
    }

    /// The runtime's run at the handler's start, if it has one; counted and logged like any.
    async fn run_start(&self) {
        let config = self.shared.config();
        let Some(work) = self.runtime.start(&Start {
            handler: &config.name,
            local: &self.local.borrow(),
            env: &config.env,
            timeout: config.timeout,
        }) else {
            return;
        };
        lock(&self.shared.stats).running = true;
        let result = work.await;
        lock(&self.shared.stats).finished(&result);
        log_result(&config, "start", &result);
    }

    /// Runs one event on the handler's runtime (again, while it cannot start: see
    /// [`HandlerRuns::attempt`]), records and logs the result, and sends it to the query's
    /// waiter if there is one.
    async fn run(&self, event: Event, reply: Option<oneshot::Sender<RunResult>>) {
        // A handler in a serial group waits for the group's turn, and holds it for the run.
        let group = self.shared.config().serial_group.clone();
        let turn = group.as_deref().map(|g| self.groups.turn(g));
        let _turn = match &turn {
            Some(turn) => {
                lock(&self.shared.stats).waiting_turn = true;
                let guard = turn.lock().await;
                lock(&self.shared.stats).waiting_turn = false;
                Some(guard)
            }
            None => None,
        };
        let (config, result) = self.attempt(&event).await;
        lock(&self.shared.stats).finished(&result);
        if let Event::User(user) = &event
            && result.started
        {
            // Ran (whatever its exit code): a restart must not run it again.
            let first = self.shared.history.ran(user);
            self.new_runs.push(HandledRun {
                handler: config.name.clone(),
                ltime: user.ltime,
                origin: user.origin.clone(),
                name: user.name.clone(),
                first,
            });
        }
        if result.started {
            log_result(&config, &describe(&event), &result);
        }
        if let Some(reply) = reply {
            // The waiter may have given up; that is fine.
            let _ = reply.send(result);
        }
        self.shared.log_unlogged_drops(&config.name);
    }
}

impl HandlerRuns {
    /// Starts the run, and starts it again while it cannot start — nothing ran, typically for
    /// want of a free file descriptor or process slot, which a moment later are there again —
    /// with a backoff from [`START_RETRY_FIRST`] doubling to [`START_RETRY_MOST`], for as long
    /// as the handler's timeout. Each failed start is counted; the first is logged, and how it
    /// ended. Returns the handler's settings the last attempt used, and its result.
    async fn attempt(&self, event: &Event) -> (Arc<HandlerConfig>, RunResult) {
        let first = Instant::now();
        let mut backoff = START_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            let config = self.shared.config();
            // The local node is read once, as the run starts; the runtime takes what it needs
            // of it before the first await.
            let work = self.runtime.run(&Run {
                handler: &config.name,
                event,
                local: &self.local.borrow(),
                env: &config.env,
                timeout: config.timeout,
            });
            lock(&self.shared.stats).running = true;
            let result = work.await;
            if result.started {
                if failures > 0 {
                    tracing::warn!(handler = %config.name, event = %describe(event), attempts = failures + 1, "handler started after {failures} failed attempt(s)");
                }
                return (config, result);
            }
            failures += 1;
            lock(&self.shared.stats).start_failures += 1;
            let error = result.error.as_deref().unwrap_or("unknown reason");
            if first.elapsed() + backoff > config.timeout {
                tracing::error!(handler = %config.name, event = %describe(event), attempts = failures, "handler could not start ({error}) within its timeout of {:?}; gave up: the event is not recorded as handled, so it runs again after a restart", config.timeout);
                return (config, result);
            }
            if failures == 1 {
                tracing::warn!(handler = %config.name, event = %describe(event), "handler could not start ({error}); trying again for up to {:?}", config.timeout);
            } else {
                tracing::debug!(handler = %config.name, event = %describe(event), attempts = failures, "handler could not start ({error}); trying again in {backoff:?}");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(START_RETRY_MOST);
        }
    }
}

fn log_result(config: &HandlerConfig, event: &str, result: &RunResult) {
    let duration_ms = result.duration.as_millis() as u64;
    tracing::debug!(
        handler = %config.name,
        %event,
        duration_ms,
        exit_code = result.exit_code,
        truncated = result.truncated,
        stdout = %result.stdout_tail(LOG_TAIL),
        stderr = %result.stderr_tail(LOG_TAIL),
        "handler ran: {result}"
    );
    if result.timed_out && result.error.is_none() {
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
            command = %config.runtime,
            exit_code = result.exit_code,
            signal = result.signal,
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
