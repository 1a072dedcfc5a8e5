//! What the dispatcher tests share: waiting, with a bound, for what a user would see.

use std::time::{Duration, Instant};

use rumor_handlers::{Dispatcher, HandlerStatus};

/// Upper bound for anything a test waits for; far above what any step needs.
pub const BOUND: Duration = Duration::from_secs(20);

/// Waits until `done`, failing the test after [`BOUND`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < BOUND, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status of the handler `name`, as `rumor info` shows it.
pub fn status_of(dispatcher: &Dispatcher, name: &str) -> HandlerStatus {
    dispatcher
        .status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no handler {name}"))
}

/// Waits until the handler `name` has finished `runs` runs, and gives its status then.
pub async fn wait_runs(dispatcher: &Dispatcher, name: &str, runs: u64) -> HandlerStatus {
    wait_until(&format!("{runs} runs of {name}"), || {
        status_of(dispatcher, name).runs >= runs
    })
    .await;
    status_of(dispatcher, name)
}
