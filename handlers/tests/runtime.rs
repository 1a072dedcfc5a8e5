//! The dispatcher drives any handler runtime through the one interface (`Runtime`): a probe
//! runtime, given as `RuntimeConfig::Custom`, records what it is handed. Whatever its runtime, a
//! handler keeps Serf's filters and coalescing, runs its events in order and one at a time, side
//! by side with other handlers, with its own timeout and environment, and keeps the handled-
//! events record; a run's stdout is a query's answer; and a run in progress is cancelled (its
//! future dropped) when the thread the handlers run on stops.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumor_handlers::{
    Dispatcher, Event, EventFilter, HandlerConfig, HandlerThread, LocalNode, MemberEventKind,
    MemberInfo, QueryEvent, Run, RunFuture, RunResult, Runtime, RuntimeConfig, UserEvent,
};

use common::{BOUND, status_of, wait_runs, wait_until};
use tokio::sync::Notify;

/// What the probe was handed for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    handler: String,
    event: String,
    local: String,
    timeout: Duration,
    env: BTreeMap<String, String>,
}

/// A runtime that records each run it is handed, in the order it is handed them, and how many
/// of its runs were in progress at once. A user event named `hang` runs until its timeout (and
/// reports it, as a runtime must); one named `wait` runs until `release` is notified.
#[derive(Default)]
struct Probe {
    seen: Mutex<Vec<Seen>>,
    active: AtomicUsize,
    most_active: AtomicUsize,
    /// Runs whose future was dropped before it ended.
    cancelled: AtomicUsize,
    release: Notify,
}

impl Probe {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.event).collect()
    }
}

/// Counts a run in progress; a run dropped before `finish` counts as cancelled.
struct InProgress<'a> {
    probe: &'a Probe,
    finished: bool,
}

impl<'a> InProgress<'a> {
    fn enter(probe: &'a Probe) -> InProgress<'a> {
        let now = probe.active.fetch_add(1, Ordering::SeqCst) + 1;
        probe.most_active.fetch_max(now, Ordering::SeqCst);
        InProgress {
            probe,
            finished: false,
        }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.probe.active.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.probe.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Runtime for Probe {
    fn run<'r>(&'r self, run: &Run<'_>) -> RunFuture<'r> {
        let event = describe(run.event);
        self.seen.lock().unwrap().push(Seen {
            handler: run.handler.to_string(),
            event: event.clone(),
            local: run.local.name.clone(),
            timeout: run.timeout,
            env: run.env.clone(),
        });
        let timeout = run.timeout;
        Box::pin(async move {
            let in_progress = InProgress::enter(self);
            let started_at = SystemTime::now();
            let start = Instant::now();
            let mut timed_out = false;
            match event.as_str() {
                "user:hang" => {
                    tokio::time::sleep(timeout).await;
                    timed_out = true;
                }
                "user:wait" => self.release.notified().await,
                // Gives a second run of the same handler, were one started, time to show.
                _ => tokio::time::sleep(Duration::from_millis(2)).await,
            }
            in_progress.finish();
            RunResult {
                exit_code: (!timed_out).then_some(0),
                signal: None,
                timed_out,
                duration: start.elapsed(),
                started_at,
                stdout: format!("{event} ran").into_bytes(),
                stderr: Vec::new(),
                truncated: false,
                error: None,
                started: true,
            }
        })
    }
}

/// An event as the probe records it: `member-join a,b`, `user:deploy`, `query:ping`.
fn describe(event: &Event) -> String {
    match event {
        Event::Member { kind, members } => {
            let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
            format!("{kind} {}", names.join(","))
        }
        Event::User(user) => format!("user:{}", user.name),
        Event::Query(query) => format!("query:{}", query.name),
    }
}

fn probe_handler(probe: &Arc<Probe>, name: &str, filter: &str) -> HandlerConfig {
    HandlerConfig::with_runtime(
        name,
        EventFilter::parse(filter).unwrap(),
        RuntimeConfig::Custom {
            label: format!("probe {name}"),
            runtime: probe.clone(),
        },
    )
}

fn member(name: &str, role: &str) -> MemberInfo {
    MemberInfo {
        name: name.into(),
        addr: "10.0.0.1".parse::<IpAddr>().unwrap(),
        port: 7946,
        tags: [("role".to_string(), role.to_string())].into(),
    }
}

fn member_event(kind: MemberEventKind, members: Vec<MemberInfo>) -> Event {
    Event::Member { kind, members }
}

fn user(name: &str, ltime: u64) -> Event {
    Event::User(UserEvent {
        ltime,
        name: name.into(),
        payload: vec![],
        coalesce: false,
        origin: "ops".into(),
    })
}

fn local() -> LocalNode {
    LocalNode {
        name: "lb-1".into(),
        tags: Default::default(),
    }
}

#[tokio::test]
async fn a_runtime_gets_what_the_filters_and_coalescing_select_in_order_one_run_at_a_time() {
    let probe = Arc::new(Probe::default());
    let mut deploys = probe_handler(&probe, "deploys", "member-join,user:deploy");
    deploys.tags_filter.insert("role".into(), "web".into());
    deploys.timeout = Duration::from_secs(7);
    deploys.env.insert("STAGE".into(), "prod".into());
    let joins_probe = Arc::new(Probe::default());
    let mut joins = probe_handler(&joins_probe, "joins", "member-join");
    joins.coalesce = Some(Duration::from_millis(100));
    let dispatcher = Dispatcher::new(local(), vec![deploys, joins]).unwrap();

    dispatcher.dispatch(member_event(
        MemberEventKind::Join,
        vec![member("web-1", "web"), member("db-1", "db")],
    ));
    for ltime in 1..=5 {
        dispatcher.dispatch(user("deploy", ltime));
    }
    dispatcher.dispatch(user("other", 6));
    dispatcher.dispatch(member_event(
        MemberEventKind::Leave,
        vec![member("web-2", "web")],
    ));
    dispatcher.dispatch(member_event(
        MemberEventKind::Join,
        vec![member("web-3", "web")],
    ));
    wait_runs(&dispatcher, "deploys", 7).await;
    wait_runs(&dispatcher, "joins", 1).await;

    assert_eq!(
        probe.events(),
        [
            "member-join web-1",
            "user:deploy",
            "user:deploy",
            "user:deploy",
            "user:deploy",
            "user:deploy",
            "member-join web-3"
        ],
        "the tag filter cut db-1, the event filter left out `other` and the leave, in order"
    );
    for s in probe.seen() {
        assert_eq!(s.handler, "deploys");
        assert_eq!(s.timeout, Duration::from_secs(7));
        assert_eq!(s.env, BTreeMap::from([("STAGE".into(), "prod".into())]));
        assert_eq!(s.local, "lb-1");
    }
    assert_eq!(
        probe.most_active.load(Ordering::SeqCst),
        1,
        "one run at a time"
    );
    assert_eq!(
        joins_probe.events(),
        ["member-join web-1,db-1,web-3"],
        "joins within the window coalesced into one run"
    );
    assert_eq!(
        joins_probe.seen()[0].timeout,
        rumor_handlers::DEFAULT_TIMEOUT
    );

    let status = status_of(&dispatcher, "deploys");
    assert_eq!((status.runs, status.failures), (7, 0));
    assert_eq!(status.command, "probe deploys");
    // The handled-events record, whatever the runtime.
    let recorded = &dispatcher.handled()["deploys"];
    let ltimes: Vec<u64> = recorded.events.iter().map(|(t, _, _)| *t).collect();
    assert_eq!(ltimes, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn handlers_on_any_runtime_run_side_by_side() {
    let probe = Arc::new(Probe::default());
    let dispatcher = Dispatcher::new(
        local(),
        vec![
            probe_handler(&probe, "slow", "user:wait"),
            probe_handler(&probe, "fast", "user:go"),
        ],
    )
    .unwrap();
    dispatcher.dispatch(user("wait", 1));
    wait_until("the slow run to start", || {
        status_of(&dispatcher, "slow").running
    })
    .await;
    // The slow handler's run is in progress: the fast one runs all the same.
    for ltime in 2..=4 {
        dispatcher.dispatch(user("go", ltime));
    }
    wait_runs(&dispatcher, "fast", 3).await;
    assert_eq!(status_of(&dispatcher, "slow").runs, 0);
    probe.release.notify_one();
    wait_runs(&dispatcher, "slow", 1).await;
}

#[tokio::test]
async fn the_runtime_stops_a_run_at_the_handlers_timeout_and_a_reload_changes_it() {
    let probe = Arc::new(Probe::default());
    let mut config = probe_handler(&probe, "h", "user");
    config.timeout = Duration::from_millis(50);
    let dispatcher = Dispatcher::new(local(), vec![config.clone()]).unwrap();
    dispatcher.dispatch(user("hang", 1));
    dispatcher.dispatch(user("after", 2));
    let status = wait_runs(&dispatcher, "h", 2).await;
    assert_eq!((status.timeouts, status.failures), (1, 1), "{status:?}");
    assert!(!status.last.unwrap().timed_out, "the next event ran");

    // Same runtime: the handler is kept, and its next runs get the new timeout.
    config.timeout = Duration::from_millis(80);
    dispatcher.reload(vec![config.clone()]).unwrap();
    dispatcher.dispatch(user("hang", 3));
    let status = wait_runs(&dispatcher, "h", 3).await;
    assert_eq!(status.timeouts, 2, "counters kept: the same handler");
    let timeouts: Vec<Duration> = probe.seen().iter().map(|s| s.timeout).collect();
    assert_eq!(
        timeouts,
        [50, 50, 80].map(Duration::from_millis),
        "each run had its handler's timeout at the time"
    );

    // Another runtime: a new handler, with its own runs and counters.
    let other = Arc::new(Probe::default());
    let mut replaced = probe_handler(&other, "h", "user");
    replaced.timeout = config.timeout;
    dispatcher.reload(vec![replaced]).unwrap();
    dispatcher.dispatch(user("next", 4));
    wait_runs(&dispatcher, "h", 1).await;
    assert_eq!(other.events(), ["user:next"]);
    assert_eq!(probe.seen().len(), 3);
}

#[tokio::test]
async fn a_query_answer_is_the_stdout_of_a_runtimes_run() {
    let probe = Arc::new(Probe::default());
    let dispatcher =
        Dispatcher::new(local(), vec![probe_handler(&probe, "q", "query:ping")]).unwrap();
    let runs = dispatcher.dispatch_query(QueryEvent {
        ltime: 1,
        id: 1,
        name: "ping".into(),
        payload: b"hi".to_vec(),
        origin: "ops".into(),
    });
    assert_eq!(runs.handlers().collect::<Vec<_>>(), ["q"]);
    let answer = tokio::time::timeout(BOUND, runs.answer()).await.unwrap();
    assert_eq!(answer.as_deref(), Ok(&b"query:ping ran"[..]));
}

#[test]
fn a_run_in_progress_is_cancelled_when_the_handler_thread_stops() {
    let probe = Arc::new(Probe::default());
    let thread = HandlerThread::start(|| Ok(())).unwrap();
    let mut config = probe_handler(&probe, "h", "user");
    config.timeout = Duration::from_secs(600);
    let dispatcher = Dispatcher::on(thread.handle().clone(), local(), vec![config]).unwrap();
    dispatcher.dispatch(user("hang", 1));
    let start = Instant::now();
    while probe.active.load(Ordering::SeqCst) == 0 {
        assert!(start.elapsed() < BOUND, "the run never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(thread);
    assert_eq!(probe.cancelled.load(Ordering::SeqCst), 1);
    assert_eq!(probe.active.load(Ordering::SeqCst), 0);
    assert_eq!(status_of(&dispatcher, "h").runs, 0, "it never finished");
}

#[tokio::test]
async fn serf_style_coalescing_runs_once_events_stop_and_flush_runs_at_once() {
    // Serf's timing: the window closes early once no event came for the quiet period. With a
    // window far longer than the test may wait, only the quiet period can make this run.
    let probe = Arc::new(Probe::default());
    let mut quiet = probe_handler(&probe, "quiet", "member-join");
    quiet.coalesce = Some(Duration::from_secs(600));
    quiet.coalesce_quiet = Some(Duration::from_millis(200));
    // And the reverse: the window's end does not wait for a long quiet period.
    let capped_probe = Arc::new(Probe::default());
    let mut capped = probe_handler(&capped_probe, "capped", "member-join");
    capped.coalesce = Some(Duration::from_millis(200));
    capped.coalesce_quiet = Some(Duration::from_secs(600));
    let dispatcher = Dispatcher::new(local(), vec![quiet, capped]).unwrap();
    dispatcher.dispatch(member_event(
        MemberEventKind::Join,
        vec![member("a", "web")],
    ));
    dispatcher.dispatch(member_event(
        MemberEventKind::Join,
        vec![member("b", "web")],
    ));
    wait_runs(&dispatcher, "quiet", 1).await;
    wait_runs(&dispatcher, "capped", 1).await;
    assert_eq!(probe.events(), ["member-join a,b"]);
    assert_eq!(capped_probe.events(), ["member-join a,b"]);

    // A stopping agent does not wait for the window: flush_held runs what is held now.
    let mut long = probe_handler(&probe, "long", "member-leave");
    long.coalesce = Some(Duration::from_secs(600));
    dispatcher.reload(vec![long]).unwrap();
    dispatcher.dispatch(member_event(
        MemberEventKind::Leave,
        vec![member("lb-1", "lb")],
    ));
    dispatcher.flush_held();
    assert!(dispatcher.wait_idle(BOUND).await);
    assert_eq!(status_of(&dispatcher, "long").runs, 1);
    assert_eq!(probe.events(), ["member-join a,b", "member-leave lb-1"]);
}

#[tokio::test]
async fn handlers_of_one_serial_group_take_turns_as_serfs_do() {
    let probe = Arc::new(Probe::default());
    let mut join = probe_handler(&probe, "join", "user");
    join.serial_group = Some("serf".into());
    let mut leave = probe_handler(&probe, "leave", "user");
    leave.serial_group = Some("serf".into());
    let dispatcher = Dispatcher::new(local(), vec![join, leave]).unwrap();
    dispatcher.dispatch(user("wait", 1));
    // Both handlers took the event; one runs, the other waits for the group's turn.
    wait_until("one run to start", || {
        probe.active.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!dispatcher.wait_idle(Duration::ZERO).await, "still busy");
    probe.release.notify_one();
    wait_until("the first run to end and the second to start", || {
        probe.seen().len() == 2 && probe.active.load(Ordering::SeqCst) == 1
    })
    .await;
    probe.release.notify_one();
    wait_runs(&dispatcher, "join", 1).await;
    wait_runs(&dispatcher, "leave", 1).await;
    assert_eq!(
        probe.most_active.load(Ordering::SeqCst),
        1,
        "never both at once"
    );
}
