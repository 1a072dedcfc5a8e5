//! `rumor monitor --format json` as a test sees it: NDJSON lines collected on a thread.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Agent, rumor_command};

/// What the reader threads collected so far.
#[derive(Default)]
struct Collected {
    lines: Vec<String>,
    stderr: String,
    closed: bool,
}

type Shared = Arc<(Mutex<Collected>, Condvar)>;

/// A running `rumor monitor --format json --control <socket>`. Dropping it kills the process.
pub struct Monitor {
    agent: String,
    child: Child,
    shared: Shared,
    readers: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Starts streaming from `agent`. The stream may take a moment to be subscribed: a test that
    /// must not miss a line should first see some line arrive (see [`Monitor::wait_for`]).
    pub fn start(agent: &Agent) -> Monitor {
        let control = agent.control_path();
        let mut child = rumor_command()
            .arg("monitor")
            .arg("--control")
            .arg(&control)
            .args(["--format", "json"])
            .env("RUMOR_CONTROL", &control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rumor monitor for {}: {e}", agent.name()));
        let shared: Shared = Arc::default();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out_shared = Arc::clone(&shared);
        let err_shared = Arc::clone(&shared);
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let (lock, cv) = &*out_shared;
                    lock.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .lines
                        .push(line);
                    cv.notify_all();
                }
                let (lock, cv) = &*out_shared;
                lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
                cv.notify_all();
            }),
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = BufReader::new(stderr).read_to_string(&mut text);
                let (lock, _) = &*err_shared;
                lock.lock().unwrap_or_else(|p| p.into_inner()).stderr = text;
            }),
        ];
        Monitor {
            agent: agent.name().to_owned(),
            child,
            shared,
            readers,
        }
    }

    /// Every line received so far, raw.
    pub fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    /// Every line received so far that parses as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lock()
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many JSON lines received so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.json_lines().iter().filter(|v| pred(v)).count()
    }

    /// Waits up to `timeout` for a JSON line matching `pred` and returns it (the first one).
    /// Panics naming `what`, the agent, the monitor's stderr and its last lines on timeout, or if
    /// the monitor exits first.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let (lock, cv) = &*self.shared;
        let mut seen = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = seen
                .lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v))
            {
                return v;
            }
            let elapsed = start.elapsed();
            if seen.closed || elapsed >= timeout {
                let last: Vec<&str> = seen
                    .lines
                    .iter()
                    .rev()
                    .take(10)
                    .rev()
                    .map(String::as_str)
                    .collect();
                panic!(
                    "monitor of {}: {} after {elapsed:.1?} waiting for {what}; {} lines so far, last: {last:#?}; stderr: {}",
                    self.agent,
                    if seen.closed {
                        "stream ended"
                    } else {
                        "timed out"
                    },
                    seen.lines.len(),
                    seen.stderr.trim()
                );
            }
            seen = cv
                .wait_timeout(seen, timeout - elapsed)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Whether the `rumor monitor` process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// Matches a monitor line carrying the user event `name`:
/// `{"type":"event","event":{"type":"user","name":NAME,...}}`.
pub fn is_user_event(line: &Value, name: &str) -> bool {
    line["type"] == "event" && line["event"]["type"] == "user" && line["event"]["name"] == name
}

/// Matches any user event whose name starts with `prefix`.
pub fn is_user_event_prefixed(line: &Value, prefix: &str) -> bool {
    line["type"] == "event"
        && line["event"]["type"] == "user"
        && line["event"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_event_matching() {
        let line = json!({"type":"event","event":{"type":"user","ltime":3,"name":"deploy",
                          "payload":[118,49],"coalesce":true,"origin":"n1"}});
        assert!(is_user_event(&line, "deploy"));
        assert!(!is_user_event(&line, "other"));
        assert!(is_user_event_prefixed(&line, "dep"));
        let log = json!({"type":"log","message":"deploy"});
        assert!(!is_user_event(&log, "deploy"));
    }
}
