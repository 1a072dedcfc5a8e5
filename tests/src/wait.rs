//! Waiting for a condition by polling, with a bound and a useful message when it is not met.

use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every ~50 ms until it returns `Ok`, and returns that value.
///
/// On timeout, panics naming `what`, the time waited and the last `Err` (the last observed
/// state, e.g. "n3 sees n5 as failed"), so a failing test says what it saw.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(state) => state,
        };
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {:.1?} waiting for {what}; last observed: {last}",
                start.elapsed()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `check` every ~50 ms until it returns true; panics naming `what` on timeout.
/// Prefer [`wait_for`] when there is a state worth showing on failure.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_for(timeout, what, || {
        if check() {
            Ok(())
        } else {
            Err("condition still false".to_owned())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_ready() {
        let mut n = 0;
        let v = wait_for(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n = {n}"))
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn timeout_message_has_what_and_last_state() {
        let err = std::panic::catch_unwind(|| {
            wait_for::<()>(Duration::from_millis(120), "the impossible", || {
                Err("still nothing".into())
            })
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("the impossible") && msg.contains("still nothing"),
            "{msg}"
        );
    }
}
