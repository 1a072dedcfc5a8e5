//! The `docker` runtime: rolling blue/green deploys of one app's container on a `deploy`
//! event, with no coordinator (docs/containers.md).
//!
//! * [`settings`]: the handler's settings and the deploy payload.
//! * [`rollout`]: which batch this host is in and when its turn comes, from the member list.
//! * [`engine`]: the Docker Engine calls (bollard), on containers labelled with this node.
//! * [`worker`]: the app's deploys on this node, one at a time, adoption at start, deaths.
//!
//! A handler run hands a deploy to the worker and returns at once; a `deploy-status` query is
//! answered from the worker's state. Everything a deploy changes in the cluster is this
//! node's tags (`APP_version`, `APP_port`, `APP_deploy`, `health_APP`), set through the
//! [`NodeControl`] the agent hands the dispatcher.

pub mod engine;
mod ready;
pub mod rollout;
pub mod settings;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::event::Event;
use crate::lock;
#[cfg(doc)]
use crate::node_control::NodeControl;
use crate::runtime::{Run, RunFuture, RunResult, Runtime, RuntimeContext, Start};

pub use settings::{DEPLOY_EVENT, DeployRequest, DockerConfig, STATUS_QUERY};
use worker::{AppStatus, Inputs, Pending, Request};

/// The apps the docker handlers of this process manage, so a deploy naming none of them is
/// reported once, by one handler.
static APPS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// A docker handler as a [`Runtime`]: one app, one worker.
pub struct Docker {
    app: String,
    pending: Arc<Mutex<Pending>>,
    status: Arc<Mutex<AppStatus>>,
    jobs: watch::Sender<u64>,
    /// The worker's inputs until its first run or start spawns it on the handler thread.
    unstarted: Mutex<Option<Inputs>>,
}

impl Docker {
    pub fn new(config: &DockerConfig, context: &RuntimeContext) -> Docker {
        *lock(&APPS).entry(config.app.clone()).or_default() += 1;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let status = Arc::new(Mutex::new(AppStatus {
            app: config.app.clone(),
            state: "none".into(),
            ..AppStatus::default()
        }));
        let (jobs, jobs_rx) = watch::channel(0);
        let inputs = Inputs {
            config: config.clone(),
            pending: pending.clone(),
            jobs: jobs_rx,
            status: status.clone(),
            members: context.members.clone(),
            local: context.local.clone(),
            node: context.node.clone(),
        };
        Docker {
            app: config.app.clone(),
            pending,
            status,
            jobs,
            unstarted: Mutex::new(Some(inputs)),
        }
    }

    fn spawn_worker(&self) {
        if let Some(inputs) = lock(&self.unstarted).take() {
            tokio::spawn(worker::run(inputs));
        }
    }

    fn wake(&self) {
        self.jobs.send_modify(|n| *n += 1);
    }

    /// What a deploy event means for this handler, as the run's output or error.
    fn on_deploy(&self, payload: &[u8]) -> Result<String, String> {
        let request = match DeployRequest::parse(payload) {
            Ok(request) if request.app == self.app => Request::Deploy(request.image),
            Ok(request) => return self.not_mine(&request.app),
            Err(bad) if bad.app.as_deref() == Some(self.app.as_str()) => {
                tracing::warn!(app = %self.app, "deploy: {}", bad.reason);
                Request::Invalid(bad.reason)
            }
            Err(bad) => {
                return match &bad.app {
                    Some(app) => self.not_mine(app).map(|_| String::new()),
                    None => Err(bad.reason),
                };
            }
        };
        let said = match &request {
            Request::Deploy(image) => format!("deploy of {} {image} queued", self.app),
            Request::Invalid(reason) => reason.clone(),
        };
        if let Some(older) = lock(&self.pending).deploy.replace(request) {
            tracing::info!(app = %self.app, "deploy {older:?} superseded before it started");
        }
        self.wake();
        Ok(said)
    }

    /// A deploy for another app: an error from one handler when no handler here manages it.
    fn not_mine(&self, app: &str) -> Result<String, String> {
        let apps = lock(&APPS);
        if apps.contains_key(app) || apps.keys().next() != Some(&self.app) {
            return Ok(String::new());
        }
        Err(format!(
            "deploy names app {app:?}, which no docker handler on this node manages ({}); nothing started or stopped",
            apps.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let mut apps = lock(&APPS);
        if let Some(n) = apps.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                apps.remove(&self.app);
            }
        }
    }
}

impl Runtime for Docker {
    fn run<'r>(&'r self, run: &Run<'_>) -> RunFuture<'r> {
        let started_at = SystemTime::now();
        let start = Instant::now();
        let outcome = match run.event {
            Event::User(user) if user.name == DEPLOY_EVENT => self.on_deploy(&user.payload),
            Event::Query(query) if query.name == STATUS_QUERY => {
                let asked = String::from_utf8_lossy(&query.payload).trim().to_string();
                if asked.is_empty() || asked == self.app {
                    let mut status = lock(&self.status).clone();
                    status.node = run.local.name.clone();
                    Ok(serde_json::to_string(&status).unwrap_or_default())
                } else {
                    Ok(String::new())
                }
            }
            _ => Ok(String::new()),
        };
        Box::pin(async move {
            self.spawn_worker();
            finished(started_at, start.elapsed(), outcome)
        })
    }

    fn start<'r>(&'r self, _start: &Start<'_>) -> Option<RunFuture<'r>> {
        lock(&self.pending).adopt = true;
        self.wake();
        Some(Box::pin(async move {
            self.spawn_worker();
            finished(SystemTime::now(), Duration::ZERO, Ok(String::new()))
        }))
    }
}

fn finished(
    started_at: SystemTime,
    duration: Duration,
    outcome: Result<String, String>,
) -> RunResult {
    let (stdout, error, code) = match outcome {
        Ok(out) => (out.into_bytes(), None, 0),
        Err(e) => (Vec::new(), Some(e), 1),
    };
    RunResult {
        exit_code: Some(code),
        signal: None,
        timed_out: false,
        duration,
        started_at,
        stdout,
        stderr: Vec::new(),
        truncated: false,
        error,
        started: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::LocalNode;
    use crate::template::TemplateGroups;

    fn runtime(app: &str) -> Docker {
        let local = LocalNode {
            name: "web-1".into(),
            tags: Default::default(),
        };
        let context = RuntimeContext {
            members: watch::channel(None).1,
            local: watch::channel(local).1,
            groups: Arc::new(TemplateGroups::default()),
            node: watch::channel(None).1,
        };
        Docker::new(&DockerConfig::new(app, 8080), &context)
    }

    #[test]
    fn a_newer_deploy_supersedes_a_queued_one() {
        let web = runtime("svc-a");
        assert!(web.on_deploy(b"svc-a demo:v1").unwrap().contains("queued"));
        web.on_deploy(b"svc-a demo:v2").unwrap();
        let pending = lock(&web.pending).deploy.clone();
        match pending {
            Some(Request::Deploy(image)) => assert_eq!(image.to_string(), "demo:v2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_apps_and_bad_payloads() {
        let web = runtime("svc-b");
        // Another handler of this process manages svc-c: not this handler's business.
        let _other = runtime("svc-c");
        assert_eq!(web.on_deploy(b"svc-c demo:v1").unwrap(), "");
        // A malformed image for this app is queued as a failure to publish.
        web.on_deploy(b"svc-b Bad:Image:").unwrap();
        assert!(matches!(
            lock(&web.pending).deploy,
            Some(Request::Invalid(_))
        ));
        // A payload with no app at all is an error of the run, in the log.
        assert!(web.on_deploy(b"").unwrap_err().contains("APP IMAGE"));
    }
}
