//! One handler's task: takes its jobs in order, holds coalescable events for the window, runs
//! one at a time on the handler's runtime (again while a run cannot start), and keeps the
//! handler's counters, handled-events record and log lines.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};

use super::{Job, LOG_TAIL, START_RETRY_FIRST, START_RETRY_MOST, Shared};
use crate::coalesce::Coalescer;
use crate::config::HandlerConfig;
use crate::contract::LocalNode;
use crate::event::Event;
use crate::handled_events::{HandledRun, NewRuns};
use crate::lock;
use crate::runtime::{Run, RunResult, Runtime, Start};
use crate::serial::SerialGroups;

/// What a handler's task runs its events with.
pub(super) struct HandlerRuns {
    pub(super) shared: Arc<Shared>,
    pub(super) runtime: Arc<dyn Runtime>,
    pub(super) local: watch::Receiver<LocalNode>,
    pub(super) new_runs: Arc<NewRuns>,
    pub(super) groups: Arc<SerialGroups>,
}

/// One handler's loop: takes jobs in order, holds coalescable events for the window, runs one
/// at a time. Ends when the queue is closed and drained, after running what is still held.
pub(super) async fn handler_task(mut jobs: mpsc::Receiver<Job>, handler: HandlerRuns) {
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
pub(super) fn describe(event: &Event) -> String {
    match event {
        Event::Member { kind, members } if members.len() == 1 => {
            format!("{kind} ({})", members[0].name)
        }
        Event::Member { kind, members } => format!("{kind} ({} members)", members.len()),
        Event::User(user) => format!("user:{} (ltime {})", user.name, user.ltime),
        Event::Query(query) => format!("query:{} (ltime {})", query.name, query.ltime),
    }
}
