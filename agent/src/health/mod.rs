//! Health checks: an input adapter that turns what a host's services answer into the node's
//! tags, `health_NAME=passing|warning|critical`, so the whole cluster sees a service's health
//! within the gossip delay, and a lookup sends traffic only to members whose checks all pass
//! ([`MemberView::passing`](crate::cluster::MemberView::passing): DNS, the haproxy plugin's
//! backends, any template's `members | passing`).
//!
//! * [`config`]: `[[check]]` tables (config file and plugin manifests), validated.
//! * [`probe`]: one run of a command, an HTTP GET or a TCP connect, bounded in time and output.
//! * [`state`]: the three states, exit codes, and rise/fall ([`Tracker`](state::Tracker)),
//!   pure logic.
//! * [`notify`]: the JSON user event sent on a change.
//! * [`runner`]: one task per check, and the set of them a reload changes.
//!
//! Like the control API, checks reach the cluster only through its handle: they set tags and
//! send events, nothing else. `docs/health.md` is the user's page.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

pub mod config;
pub mod notify;
pub mod probe;
pub mod runner;
pub mod state;

pub use config::{CheckConfig, CheckTable, Probe};
pub use runner::HealthChecks;
pub use state::State;

/// What each check last did, by name: written by the checks, read by `GET /v1/checks` and
/// the metrics.
pub type CheckBoard = Arc<Mutex<BTreeMap<String, CheckStatus>>>;

/// One check, as `rumor checks` and `GET /v1/checks` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    /// `command`, `http` or `tcp`.
    pub kind: String,
    /// The command, URL or address.
    pub target: String,
    /// The published state (`health_NAME`).
    pub state: State,
    /// No result yet: `state` is the `critical` a check starts in.
    pub pending: bool,
    /// The last run's output (its end for a command, at most 4 KiB).
    pub output: String,
    /// The last run's own result, before rise/fall.
    pub last_result: Option<State>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub notify: Option<String>,
    pub runs: u64,
    /// Changes of state since the check started (the first result included).
    pub transitions: u64,
    /// When the last run ended, milliseconds since the Unix epoch.
    pub last_run_unix_ms: Option<u64>,
    /// When the state last changed (or the check started).
    pub since_unix_ms: u64,
}

impl CheckStatus {
    fn new(config: &CheckConfig, state: State, pending: bool) -> CheckStatus {
        CheckStatus {
            name: config.name.clone(),
            kind: config.probe.kind().to_string(),
            target: config.probe.target().to_string(),
            state,
            pending,
            output: String::new(),
            last_result: None,
            interval_ms: config.interval.as_millis() as u64,
            timeout_ms: config.timeout.as_millis() as u64,
            rise: config.rise,
            fall: config.fall,
            notify: config.notify.clone(),
            runs: 0,
            transitions: 0,
            last_run_unix_ms: None,
            since_unix_ms: runner::unix_ms(),
        }
    }

    fn record(&mut self, outcome: &probe::Outcome, state: State, changed: bool, now_ms: u64) {
        self.runs += 1;
        self.pending = false;
        self.output = outcome.output.clone();
        self.last_result = Some(outcome.state);
        self.last_run_unix_ms = Some(now_ms);
        self.state = state;
        if changed {
            self.transitions += 1;
            self.since_unix_ms = now_ms;
        }
    }
}

/// The checks' tags a node starts with: `critical` for each of `checks`, and none of the
/// `health_*` tags it kept from an earlier run (a tags file) for checks it no longer has.
pub fn initial_tags(
    mut tags: BTreeMap<String, String>,
    checks: &[CheckConfig],
) -> BTreeMap<String, String> {
    tags.retain(|k, _| !k.starts_with(crate::cluster::HEALTH_TAG_PREFIX));
    for check in checks {
        tags.insert(check.tag(), State::Critical.as_str().to_string());
    }
    tags
}
