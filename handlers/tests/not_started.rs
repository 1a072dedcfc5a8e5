//! A run that could not start — nothing ran, say for want of a free file descriptor — is tried
//! again, counted each time, and only a run that started is recorded as handled. One that
//! never starts within the handler's timeout is given up, still not recorded as handled.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use rumor_handlers::{
    Dispatcher, Event, EventFilter, HandlerConfig, LocalNode, Run, RunFuture, RunResult, Runtime,
    RuntimeConfig, UserEvent,
};

use common::wait_runs;

/// A runtime whose first `failures` runs cannot start; the later ones exit 0.
struct Unstartable {
    failures: usize,
    attempts: AtomicUsize,
}

impl Runtime for Unstartable {
    fn run<'r>(&'r self, _run: &Run<'_>) -> RunFuture<'r> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        let failures = self.failures;
        Box::pin(async move {
            if attempt < failures {
                return RunResult::not_started(
                    SystemTime::now(),
                    Duration::ZERO,
                    "could not start /bin/sh: Too many open files (os error 24)".into(),
                );
            }
            RunResult {
                exit_code: Some(0),
                signal: None,
                timed_out: false,
                duration: Duration::ZERO,
                started_at: SystemTime::now(),
                stdout: b"ran".to_vec(),
                stderr: Vec::new(),
                truncated: false,
                error: None,
                started: true,
            }
        })
    }
}

fn handler(runtime: &Arc<Unstartable>, timeout: Duration) -> HandlerConfig {
    let mut config = HandlerConfig::with_runtime(
        "deploy",
        EventFilter::parse("user:deploy").unwrap(),
        RuntimeConfig::Custom {
            label: "unstartable".into(),
            runtime: runtime.clone(),
        },
    );
    config.timeout = timeout;
    config
}

fn deploy(ltime: u64) -> Event {
    Event::User(UserEvent {
        ltime,
        name: "deploy".into(),
        payload: vec![],
        coalesce: false,
        origin: "ops".into(),
    })
}

fn local() -> LocalNode {
    LocalNode {
        name: "web-1".into(),
        tags: Default::default(),
    }
}

#[tokio::test]
async fn a_run_that_could_not_start_is_tried_again_and_then_recorded() {
    let runtime = Arc::new(Unstartable {
        failures: 3,
        attempts: AtomicUsize::new(0),
    });
    let dispatcher =
        Dispatcher::new(local(), vec![handler(&runtime, Duration::from_secs(30))]).unwrap();
    dispatcher.dispatch(deploy(7));
    let status = wait_runs(&dispatcher, "deploy", 1).await;
    assert_eq!(runtime.attempts.load(Ordering::SeqCst), 4);
    assert_eq!(status.start_failures, 3);
    assert_eq!((status.runs, status.failures), (1, 0), "{status:?}");
    let handled = dispatcher.take_handled();
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0].ltime, 7);
}

#[tokio::test]
async fn a_run_that_never_starts_is_given_up_and_not_recorded_as_handled() {
    let runtime = Arc::new(Unstartable {
        failures: usize::MAX,
        attempts: AtomicUsize::new(0),
    });
    let dispatcher =
        Dispatcher::new(local(), vec![handler(&runtime, Duration::from_millis(300))]).unwrap();
    dispatcher.dispatch(deploy(7));
    let status = wait_runs(&dispatcher, "deploy", 1).await;
    assert!(status.start_failures >= 2, "{status:?}");
    assert_eq!(
        status.failures, 1,
        "a run given up is a failure: {status:?}"
    );
    assert!(
        dispatcher.take_handled().is_empty(),
        "nothing ran, so a restart must run it"
    );
    assert!(dispatcher.handled().is_empty());
}
