//! The running checks: one task per check, on the handler thread (a check is a process or a
//! connection, like a handler run, and runs at the handlers' priority), and the set of them,
//! changed by reloads.
//!
//! Each task runs its probe every interval, feeds the result to its [`Tracker`], and on a
//! change sets the node's tag `health_NAME` through the cluster handle (so every member sees
//! it within the gossip delay, and a member-update runs everywhere as for any tag change),
//! sends the notify event, and logs it. What it last saw is on the [`CheckBoard`] for
//! `rumor checks` and the metrics.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rumor_handlers::event::Tags;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::config::{CheckConfig, check_unique};
use super::notify;
use super::probe;
use super::state::{Change, State, Tracker};
use super::{CheckBoard, CheckStatus};
use crate::cluster::ClusterHandle;

/// What a check's task needs of the agent.
#[derive(Clone)]
struct Publish {
    cluster: ClusterHandle,
    node: String,
    /// Name + payload of a user event, at most.
    max_event_bytes: usize,
    board: CheckBoard,
}

/// The agent's checks, as the last start or reload set them.
pub struct HealthChecks {
    runtime: Handle,
    publish: Publish,
    running: BTreeMap<String, (CheckConfig, JoinHandle<()>)>,
}

impl HealthChecks {
    /// No checks yet; `runtime` is where their tasks run (the handler thread's).
    pub fn new(
        runtime: Handle,
        cluster: ClusterHandle,
        node: String,
        max_event_bytes: usize,
        board: CheckBoard,
    ) -> HealthChecks {
        HealthChecks {
            runtime,
            publish: Publish {
                cluster,
                node,
                max_event_bytes,
                board,
            },
            running: BTreeMap::new(),
        }
    }

    /// Runs exactly `checks`: starts the new ones (`critical` until their first result),
    /// restarts those whose settings changed (keeping their state), stops the removed ones and
    /// deletes their tags. Two checks of one name change nothing and are an error.
    pub async fn apply(&mut self, checks: Vec<CheckConfig>) -> Result<String, String> {
        check_unique(&checks)?;
        let wanted: BTreeMap<String, CheckConfig> =
            checks.into_iter().map(|c| (c.name.clone(), c)).collect();
        let mut delete = Vec::new();
        let mut set = Tags::new();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if wanted.get(&name) == self.running.get(&name).map(|(c, _)| c) {
                continue;
            }
            let (old, task) = self.running.remove(&name).expect("listed");
            task.abort();
            if !wanted.contains_key(&name) {
                delete.push(old.tag());
                self.publish.board_mut().remove(&name);
                info!(check = %name, "check removed");
            }
        }
        for (name, config) in wanted {
            if self.running.contains_key(&name) {
                continue;
            }
            let resumed = self.publish.board_mut().get(&name).map(|s| s.state);
            let tracker = match resumed {
                Some(state) => Tracker::resume(state, config.rise, config.fall),
                None => {
                    set.insert(config.tag(), State::Critical.as_str().to_string());
                    Tracker::new(config.rise, config.fall)
                }
            };
            self.publish.board_mut().insert(
                name.clone(),
                CheckStatus::new(&config, tracker.state(), resumed.is_none()),
            );
            info!(check = %name, kind = config.probe.kind(), target = config.probe.target(),
                  interval = ?config.interval, "check started");
            let task = self
                .runtime
                .spawn(run(config.clone(), tracker, self.publish.clone()));
            self.running.insert(name, (config, task));
        }
        if !set.is_empty() || !delete.is_empty() {
            self.publish
                .cluster
                .update_tags(set, delete)
                .await
                .map_err(|e| format!("cannot publish the checks' tags: {e}"))?;
        }
        Ok(format!("{} checks", self.running.len()))
    }
}

impl HealthChecks {
    /// How many checks run.
    pub fn count(&self) -> usize {
        self.running.len()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

impl Publish {
    fn board_mut(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CheckStatus>> {
        self.board
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the tag, tells the board, sends the notify event and logs the change.
    async fn change(&self, config: &CheckConfig, change: Change, output: &str) {
        let old = change.old.map_or("(none: first result)", State::as_str);
        let line = output.lines().next().unwrap_or("");
        if change.new == State::Passing {
            info!(check = %config.name, old, new = %change.new, output = line, "check state changed");
        } else {
            warn!(check = %config.name, old, new = %change.new, output = line, "check state changed");
        }
        let tags = Tags::from([(config.tag(), change.new.as_str().to_string())]);
        if let Err(e) = self.cluster.update_tags(tags, Vec::new()).await {
            error!(check = %config.name, "cannot publish the check's state: {e}");
        }
        let Some(event) = &config.notify else { return };
        if !notify::worth_telling(&change) {
            return;
        }
        let budget = self.max_event_bytes.saturating_sub(event.len());
        let Some(payload) = notify::payload(&self.node, &config.name, change, output, budget)
        else {
            error!(check = %config.name, event = %event,
                   "the notify event does not fit max_event_bytes even without the output");
            return;
        };
        if let Err(e) = self.cluster.send_event(event.clone(), payload, false).await {
            error!(check = %config.name, event = %event, "cannot send the notify event: {e}");
        }
    }
}

/// One check, until its task is aborted.
async fn run(config: CheckConfig, mut tracker: Tracker, publish: Publish) {
    let mut ticks = tokio::time::interval(config.interval);
    // A run that took long (a timeout) does not make the next ones come in a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let outcome = probe::run(&config.probe, config.timeout).await;
        let change = tracker.record(outcome.state);
        {
            let mut board = publish.board_mut();
            if let Some(status) = board.get_mut(&config.name) {
                status.record(&outcome, tracker.state(), change.is_some(), unix_ms());
            }
        }
        if let Some(change) = change {
            publish.change(&config, change, &outcome.output).await;
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
