//! `rumor monitor --format json` as a test sees it: NDJSON lines collected on a thread, each
//! with the moment it arrived (the stream itself carries no time for events).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::control::{Control, rumor_command};

/// What the reader threads collected so far.
#[derive(Default)]
struct Collected {
    lines: Vec<(Instant, String)>,
    stderr: String,
    closed: bool,
}

impl Collected {
    fn json(&self) -> impl Iterator<Item = (Instant, Value)> + '_ {
        self.lines
            .iter()
            .filter_map(|(t, l)| serde_json::from_str(l).ok().map(|v| (*t, v)))
    }
}

type Shared = Arc<(Mutex<Collected>, Condvar)>;

/// A running `rumor monitor --format json --control <socket>` (log level `info`, the
/// command's default). Dropping it kills the process.
pub struct Monitor {
    agent: String,
    child: Child,
    shared: Shared,
    readers: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Starts streaming from the agent behind `control`. The stream may take a moment to be
    /// subscribed: a test that must not miss a line should first see some line arrive (a
    /// warm-up event; see [`Monitor::wait_for`]).
    pub fn start(control: &Control) -> Monitor {
        let mut child = rumor_command()
            .arg("monitor")
            .arg("--control")
            .arg(control.socket())
            .args(["--format", "json"])
            .env("RUMOR_CONTROL", control.socket())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rumor monitor for {}: {e}", control.agent()));
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
                        .push((Instant::now(), line));
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
            agent: control.agent().to_owned(),
            child,
            shared,
            readers,
        }
    }

    /// The name of the agent this monitor streams from.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Every JSON line so far with its arrival time.
    pub fn timed_lines(&self) -> Vec<(Instant, Value)> {
        self.lock().json().collect()
    }

    /// The first JSON line matching `pred`, with its arrival time.
    pub fn first(&self, pred: impl Fn(&Value) -> bool) -> Option<(Instant, Value)> {
        self.lock().json().find(|(_, v)| pred(v))
    }

    /// How many JSON lines received so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.lock().json().filter(|(_, v)| pred(v)).count()
    }

    /// How many lines the stream said it dropped (`{"type":"lagged","missed":N}`): a monitor
    /// that lagged may have missed what a test looks for.
    pub fn missed(&self) -> u64 {
        self.lock()
            .json()
            .filter(|(_, v)| v["type"] == "lagged")
            .filter_map(|(_, v)| v["missed"].as_u64())
            .sum()
    }

    /// Waits up to `timeout` for a JSON line matching `pred` and returns it (the first one).
    /// Panics naming `what`, the agent, the monitor's stderr and its last lines on timeout, or if
    /// the monitor exits first.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        let (lock, cv) = &*self.shared;
        let mut seen = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((_, v)) = seen.json().find(|(_, v)| pred(v)) {
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
                    .map(|(_, l)| l.as_str())
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

/// A member event line of `rumor monitor`: `{"type":"event","event":{"type":"member",
/// "kind":KIND,"members":[{"name":...}, ...]}}`; returns the names if `kind` matches.
pub fn member_event_names(line: &Value, kind: &str) -> Vec<String> {
    if line["type"] != "event" || line["event"]["type"] != "member" || line["event"]["kind"] != kind
    {
        return Vec::new();
    }
    line["event"]["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_event_matching() {
        let line = json!({"type":"event","event":{"type":"user","ltime":3,"name":"deploy",
                          "payload":"v1","coalesce":true,"origin":"n1"}});
        assert!(is_user_event(&line, "deploy"));
        assert!(!is_user_event(&line, "other"));
        assert!(is_user_event_prefixed(&line, "dep"));
        let log = json!({"type":"log","message":"deploy"});
        assert!(!is_user_event(&log, "deploy"));
    }

    #[test]
    fn member_events_from_monitor_lines() {
        let line = json!({"type":"event","event":{"type":"member","kind":"failed",
            "members":[{"name":"n1","addr":"10.0.0.1","port":7946,"tags":{}}]}});
        assert_eq!(member_event_names(&line, "failed"), ["n1"]);
        assert!(member_event_names(&line, "join").is_empty());
        let log = json!({"type":"log","message":"failed"});
        assert!(member_event_names(&log, "failed").is_empty());
    }
}
