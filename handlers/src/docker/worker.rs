//! One app's deploys on this node, one at a time: the task behind a `docker` handler.
//!
//! A handler run only hands its deploy over ([`Pending`]) and returns: a rollout can wait
//! minutes for earlier batches, and the dispatcher must stay free to answer `deploy-status`
//! queries meanwhile. The worker takes the newest pending deploy; one that arrives while an
//! older one waits for its turn supersedes it. Beside deploys it adopts what it finds at
//! start, and follows the Engine's events to report a container that dies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::EventMessage;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::contract::LocalNode;
use crate::event::Tags;
use crate::lock;
use crate::members::Members;
use crate::node_control::NodeControl;

use super::engine::{Engine, Managed, follow_events};
use super::ready;
use super::rollout::{self, AppTags, Gate, PASSING};
use super::settings::{DockerConfig, ImageRef, Readiness};

/// What waits for the worker: adoption (at start, or when the serving container vanished)
/// and the newest deploy.
#[derive(Debug, Default)]
pub struct Pending {
    pub adopt: bool,
    pub deploy: Option<Request>,
}

/// The worker's next piece of work.
#[derive(Debug, PartialEq, Eq)]
enum Job {
    Adopt,
    Deploy(Request),
}

impl Pending {
    /// Adoption first; a deploy that came meanwhile stays pending for the next turn (taking
    /// both at once lost a deploy sent right after the handler was installed).
    fn next(&mut self) -> Option<Job> {
        if std::mem::take(&mut self.adopt) {
            Some(Job::Adopt)
        } else {
            self.deploy.take().map(Job::Deploy)
        }
    }
}

/// A deploy event for this app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Deploy(ImageRef),
    /// A payload naming this app that could not be read: published as `failed:invalid`.
    Invalid(String),
}

/// This node's state of the app, as `rumor deploy status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub node: String,
    pub app: String,
    pub version: Option<String>,
    pub port: Option<u16>,
    /// The `APP_deploy` tag: `ok:TAG`, `waiting:TAG`, `starting:TAG`, `failed:TAG`, ...
    pub state: String,
    pub reason: Option<String>,
    pub container: Option<String>,
}

/// What the worker keeps in its state directory to restart the app after a restart of the
/// agent or the loss of its container.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    image: String,
}

/// The worker's inputs, shared with the runtime that feeds it.
pub struct Inputs {
    pub config: DockerConfig,
    pub pending: Arc<Mutex<Pending>>,
    pub jobs: watch::Receiver<u64>,
    pub status: Arc<Mutex<AppStatus>>,
    pub members: watch::Receiver<Option<Members>>,
    pub local: watch::Receiver<LocalNode>,
    pub node: watch::Receiver<Option<Arc<dyn NodeControl>>>,
}

struct Worker {
    inputs: Inputs,
    tags: AppTags,
    node: Arc<dyn NodeControl>,
    engine: Engine,
    name: String,
    /// The container serving now.
    current: Option<Managed>,
    /// It died and has not started again.
    dead: bool,
}

/// Deploy failures short enough for a tag.
const REASON_LIMIT: usize = 120;
const POLL: Duration = Duration::from_millis(100);
/// How long one run of a `readiness = "command:…"` may take before it counts as not ready.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the app's deploys until the runtime that feeds it is dropped.
pub async fn run(mut inputs: Inputs) {
    let node = match inputs.node.wait_for(Option::is_some).await {
        Ok(node) => node.clone().expect("waited for Some"),
        Err(_) => return,
    };
    let name = inputs.local.borrow().name.clone();
    let app = inputs.config.app.clone();
    let engine = loop {
        match Engine::connect().await {
            Ok(engine) => break engine,
            Err(e) => {
                warn!(app, "{e}; trying again in 5s");
                lock(&inputs.status).state = format!("engine unreachable: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    changed = inputs.jobs.changed() => if changed.is_err() { return },
                }
            }
        }
    };
    info!(app, node = %name, "docker deploys: connected to the Docker Engine");
    let mut worker = Worker {
        tags: AppTags::new(&app),
        inputs,
        node,
        engine,
        name,
        current: None,
        dead: false,
    };
    worker.main().await;
}

impl Worker {
    async fn main(&mut self) {
        let mut events = follow_events(self.engine.clone(), self.name.clone());
        loop {
            self.run_pending(&mut events).await;
            tokio::select! {
                changed = self.inputs.jobs.changed() => if changed.is_err() { return },
                event = events.recv() => match event {
                    Some(event) => self.on_engine_event(event).await,
                    None => return,
                },
            }
        }
    }

    async fn run_pending(&mut self, events: &mut mpsc::Receiver<EventMessage>) {
        loop {
            let next = lock(&self.inputs.pending).next();
            match next {
                Some(Job::Adopt) => self.adopt().await,
                Some(Job::Deploy(request)) => self.deploy(request, events).await,
                None => return,
            }
        }
    }

    fn app(&self) -> &str {
        &self.inputs.config.app
    }

    /// At start: takes over the newest running container of the app (removing older
    /// leftovers of an interrupted deploy), starts a stopped one, or starts the recorded
    /// image again when its container is gone; then publishes its version and port.
    async fn adopt(&mut self) {
        let managed = match self.engine.managed(&self.name, self.app()).await {
            Ok(managed) => managed,
            Err(e) => return warn!(app = %self.app(), "adoption: {e}"),
        };
        let record = self.read_record();
        let keep = managed
            .iter()
            .rev()
            .find(|m| m.running && record.as_ref().is_none_or(|r| r.image == m.image))
            .or_else(|| managed.iter().rev().find(|m| m.running))
            .or_else(|| {
                managed
                    .iter()
                    .rev()
                    .find(|m| record.as_ref().is_some_and(|r| r.image == m.image))
            })
            .cloned();
        for other in managed
            .iter()
            .filter(|m| Some(&m.id) != keep.as_ref().map(|k| &k.id))
        {
            info!(app = %self.app(), container = %other.name, "removing a leftover container");
            self.engine
                .remove(&other.id, self.inputs.config.stop_grace)
                .await;
        }
        match keep {
            Some(container) => {
                if !container.running
                    && let Err(e) = self.engine.start(&container.id).await
                {
                    return warn!(app = %self.app(), "adoption: {e}");
                }
                info!(app = %self.app(), container = %container.name, version = %container.version, "adopted");
                self.publish_serving(&container, None).await;
            }
            None => {
                let Some(record) = record else { return };
                let image = match ImageRef::parse(&record.image) {
                    Ok(image) => image,
                    Err(e) => return warn!(app = %self.app(), "the deploy record: {e}"),
                };
                warn!(app = %self.app(), %image, "the recorded container is missing: starting it again");
                self.current = None;
                self.roll(image).await;
            }
        }
    }

    async fn deploy(&mut self, request: Request, events: &mut mpsc::Receiver<EventMessage>) {
        let app = self.app().to_string();
        let members = match self.inputs.members.wait_for(Option::is_some).await {
            Ok(m) => m.clone().expect("waited for Some"),
            Err(_) => return,
        };
        let config = &self.inputs.config;
        let Some(plan) = rollout::plan(&members, &config.selector, &self.name, config.max_parallel)
        else {
            info!(app, selector = %config.selector, "deploy: this host does not run the app");
            return;
        };
        let image = match request {
            Request::Deploy(image) => image,
            Request::Invalid(reason) => return self.fail("invalid", reason).await,
        };
        let version = image.tag.clone();
        if self.serving(&image).await {
            info!(app, %image, "deploy: already serving this version");
            let (container, port) = (self.current.clone(), self.status_port());
            if let Some(container) = container {
                self.publish_serving(&container, port).await;
            }
            return;
        }
        match self.engine.has_image(&image).await {
            Ok(true) => {}
            Ok(false) => {
                return self
                    .fail(&version, format!("image {image} is not on this host (rumor never pulls; load or pull it first)"))
                    .await;
            }
            Err(e) => return self.fail(&version, e).await,
        }
        if plan.batch > 0 {
            self.set_state(format!("waiting:{version}"), None).await;
            info!(app, %image, batch = plan.batch + 1, batches = plan.batches, "deploy: waiting for the earlier batches");
            let turn_timeout = self.inputs.config.turn_timeout;
            let give_up = tokio::time::Instant::now() + turn_timeout;
            loop {
                let members = self
                    .inputs
                    .members
                    .borrow_and_update()
                    .clone()
                    .unwrap_or_default();
                let waiting = match rollout::gate(&plan, &members, &self.tags, &version) {
                    Gate::Go => break,
                    Gate::Halt { host, state } => {
                        let reason = format!("{host} is {state}: the rollout stopped there");
                        warn!(app, %image, "deploy halted: {reason}");
                        return self
                            .set_state(format!("halted:{version}"), Some(reason))
                            .await;
                    }
                    Gate::Wait(hosts) => hosts,
                };
                tokio::select! {
                    changed = self.inputs.members.changed() => if changed.is_err() { return },
                    // A host of the app that never takes its turn (its handler removed, its
                    // agent stuck) must not hold the rest of the rollout forever.
                    _ = tokio::time::sleep_until(give_up) => {
                        let reason = format!(
                            "{} did not serve {version} within turn_timeout {turn_timeout:?}: \
                             the rollout stopped here",
                            waiting.join(", ")
                        );
                        warn!(app, %image, "deploy halted: {reason}");
                        return self
                            .set_state(format!("halted:{version}"), Some(reason))
                            .await;
                    }
                    Some(event) = events.recv() => self.on_engine_event(event).await,
                    changed = self.inputs.jobs.changed() => {
                        if changed.is_err() { return }
                        if lock(&self.inputs.pending).deploy.is_some() {
                            info!(app, %image, "deploy superseded by a newer one while waiting");
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(self.inputs.config.wait).await;
        }
        self.roll(image).await;
    }

    /// Whether the serving container already runs `image`.
    async fn serving(&mut self, image: &ImageRef) -> bool {
        let Some(current) = &self.current else {
            return false;
        };
        current.image == image.to_string()
            && self
                .engine
                .inspect(&current.id)
                .await
                .is_ok_and(|c| c.running)
    }

    /// Blue/green on this host: starts `image` beside the serving container, waits until it
    /// is ready, switches the tags to it, and after `drain` removes the old one. A new
    /// container that never gets ready is removed; the old one keeps serving.
    async fn roll(&mut self, image: ImageRef) {
        let version = image.tag.clone();
        self.set_state(format!("starting:{version}"), None).await;
        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let started = Instant::now();
        let id = match self
            .engine
            .start_new(&self.name, &self.inputs.config, &image, serial)
            .await
        {
            Ok(id) => id,
            Err(e) => return self.fail(&version, e).await,
        };
        let port = match self.ready(&id).await {
            Ok(port) => port,
            Err(e) => {
                self.engine.remove(&id, Duration::ZERO).await;
                return self.fail(&version, e).await;
            }
        };
        info!(app = %self.app(), %image, port, ready_after = ?started.elapsed(), "new container ready; switching");
        let old = self.current.take();
        let container = Managed {
            id,
            name: String::new(),
            version,
            image: image.to_string(),
            serial,
            running: true,
        };
        self.publish_serving(&container, Some(port)).await;
        self.current = Some(container.clone());
        self.write_record(&image);
        // The old container keeps answering while clients move to the new port.
        tokio::time::sleep(self.inputs.config.drain).await;
        let leftovers = self
            .engine
            .managed(&self.name, self.app())
            .await
            .unwrap_or_default();
        for other in leftovers.iter().filter(|m| m.id != container.id) {
            self.engine
                .remove(&other.id, self.inputs.config.stop_grace)
                .await;
        }
        if let Some(old) = old {
            info!(app = %self.app(), version = %old.version, "old container removed after the drain");
        }
    }

    /// Waits until the new container is ready; returns its host port.
    async fn ready(&self, id: &str) -> Result<u16, String> {
        let config = &self.inputs.config;
        let deadline = Instant::now() + config.ready_timeout;
        // readiness = command: how its last run ended, for the message at the deadline.
        let mut last_run = String::new();
        loop {
            let c = self.engine.inspect(id).await?;
            if !c.running {
                let log = self.engine.log_tail(id, 5).await;
                return Err(format!(
                    "the container exited (code {}) before it was ready; its last output: {log}",
                    c.exit_code.unwrap_or(-1)
                ));
            }
            let ready = match config.readiness {
                Readiness::Tcp => match c.ip {
                    Some(ip) => {
                        let addr = (ip, config.container_port);
                        tokio::time::timeout(POLL * 5, TcpStream::connect(addr))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                    None => false,
                },
                Readiness::Http { ref path } => match c.ip {
                    Some(ip) => {
                        let addr = SocketAddr::new(ip, config.container_port);
                        tokio::time::timeout(POLL * 5, ready::http_ok(addr, path))
                            .await
                            .is_ok_and(|ok| ok)
                    }
                    None => false,
                },
                Readiness::Command { ref command } => match (c.ip, c.host_port) {
                    (Some(ip), Some(host_port)) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let run = ready::command_ok(
                            command,
                            ready::Target {
                                app: self.app(),
                                ip,
                                container_port: config.container_port,
                                host_port,
                            },
                            left.clamp(POLL * 10, COMMAND_TIMEOUT),
                        )
                        .await;
                        match run {
                            Ok(()) => true,
                            Err(ended) => {
                                last_run = ended;
                                false
                            }
                        }
                    }
                    _ => false,
                },
                Readiness::Docker => match c.health.as_deref() {
                    Some("healthy") => true,
                    Some("unhealthy") => return Err("Docker reports it unhealthy".into()),
                    Some(_) => false,
                    None => {
                        return Err("readiness = docker, but the image has no HEALTHCHECK".into());
                    }
                },
            };
            if ready && let Some(port) = c.host_port {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(match config.readiness {
                    Readiness::Tcp => format!(
                        "not ready within {:?}: nothing accepted a connection on its port {}",
                        config.ready_timeout, config.container_port
                    ),
                    Readiness::Docker => format!("not healthy within {:?}", config.ready_timeout),
                    Readiness::Http { ref path } => format!(
                        "not ready within {:?}: GET {path} on its port {} never answered 2xx",
                        config.ready_timeout, config.container_port
                    ),
                    // Short, and not the command itself: the reason is cut to fit a tag, and
                    // the end of the command's output is what says why.
                    Readiness::Command { .. } if last_run.is_empty() => format!(
                        "not ready within {:?}: no address or port for the readiness command",
                        config.ready_timeout
                    ),
                    Readiness::Command { .. } => format!(
                        "not ready within {:?}: readiness command {last_run}",
                        config.ready_timeout
                    ),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Publishes the container as serving: version, port, passing health, `ok:TAG`.
    async fn publish_serving(&mut self, container: &Managed, port: Option<u16>) {
        let port = match port {
            Some(port) => Some(port),
            None => self
                .engine
                .inspect(&container.id)
                .await
                .ok()
                .and_then(|c| c.host_port),
        };
        let state = format!("ok:{}", container.version);
        let mut set = Tags::from([
            (self.tags.version.clone(), container.version.clone()),
            (self.tags.health.clone(), PASSING.to_string()),
            (self.tags.deploy.clone(), state.clone()),
        ]);
        if let Some(port) = port {
            set.insert(self.tags.port.clone(), port.to_string());
        }
        self.update_tags(set, vec![self.tags.reason.clone()]).await;
        self.dead = false;
        let mut status = lock(&self.inputs.status);
        status.version = Some(container.version.clone());
        status.port = port;
        status.state = state;
        status.reason = None;
        status.container = Some(container.id.chars().take(12).collect());
        self.current = Some(container.clone());
    }

    fn status_port(&self) -> Option<u16> {
        lock(&self.inputs.status).port
    }

    async fn fail(&mut self, version: &str, reason: String) {
        warn!(app = %self.app(), version, "deploy failed: {reason}; the old container keeps serving");
        self.set_state(format!("failed:{version}"), Some(reason))
            .await;
    }

    async fn set_state(&mut self, state: String, reason: Option<String>) {
        let mut set = Tags::from([(self.tags.deploy.clone(), state.clone())]);
        let mut delete = Vec::new();
        match &reason {
            Some(reason) => {
                set.insert(self.tags.reason.clone(), short(reason));
            }
            None => delete.push(self.tags.reason.clone()),
        }
        self.update_tags(set, delete).await;
        let mut status = lock(&self.inputs.status);
        status.state = state;
        status.reason = reason;
    }

    async fn update_tags(&self, set: Tags, delete: Vec<String>) {
        if let Err(e) = self.node.update_tags(set, delete).await {
            warn!(app = %self.app(), "cannot set the node's tags: {e}");
        }
    }

    /// A container of this node changed: the serving one dying is reported like a failing
    /// check (health tag, log line, notify event); its start again (the restart policy)
    /// passes; its removal starts the recorded version again.
    async fn on_engine_event(&mut self, event: EventMessage) {
        let id = event
            .actor
            .as_ref()
            .and_then(|a| a.id.clone())
            .unwrap_or_default();
        let Some(current) = self.current.clone().filter(|c| c.id == id) else {
            return;
        };
        match event.action.as_deref() {
            Some("die") if !self.dead => {
                self.dead = true;
                let exit_code = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|a| a.get("exitCode").cloned())
                    .unwrap_or_default();
                let log = self.engine.log_tail(&id, 5).await;
                warn!(app = %self.app(), version = %current.version, exit_code, "the app's container died; its last output: {log}");
                let health = Tags::from([(self.tags.health.clone(), "critical".to_string())]);
                self.update_tags(health, vec![]).await;
                if let Some(notify) = self.inputs.config.notify.clone() {
                    let payload = serde_json::json!({
                        "node": self.name, "app": self.app(), "version": current.version,
                        "container": current.id.chars().take(12).collect::<String>(),
                        "exit_code": exit_code, "log": log,
                    });
                    if let Err(e) = self
                        .node
                        .send_event(notify, payload.to_string().into_bytes())
                        .await
                    {
                        warn!(app = %self.app(), "cannot send the notify event: {e}");
                    }
                }
            }
            Some("start") if self.dead => {
                self.dead = false;
                info!(app = %self.app(), version = %current.version, "the app's container runs again");
                let health = Tags::from([(self.tags.health.clone(), PASSING.to_string())]);
                self.update_tags(health, vec![]).await;
            }
            Some("destroy") => {
                warn!(app = %self.app(), version = %current.version, "the app's container was removed");
                self.current = None;
                lock(&self.inputs.pending).adopt = true;
            }
            _ => {}
        }
    }

    fn record_path(&self) -> std::path::PathBuf {
        self.node
            .state_dir()
            .join(format!("docker-{}.json", self.app()))
    }

    fn read_record(&self) -> Option<Record> {
        let text = std::fs::read_to_string(self.record_path()).ok()?;
        serde_json::from_str(&text)
            .inspect_err(|e| warn!(app = %self.app(), "ignoring a damaged deploy record: {e}"))
            .ok()
    }

    fn write_record(&self, image: &ImageRef) {
        let path = self.record_path();
        let record = Record {
            image: image.to_string(),
        };
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let temp = path.with_extension("tmp");
            std::fs::write(&temp, serde_json::to_vec(&record)?)?;
            std::fs::rename(&temp, &path)
        };
        if let Err(e) = write() {
            warn!(app = %self.app(), path = %path.display(), "cannot write the deploy record: {e}");
        }
    }
}

/// The reason as a tag value: one line, no ',' (it separates tags in handlers' member lists),
/// at most [`REASON_LIMIT`] characters.
fn short(reason: &str) -> String {
    let one_line: String = reason
        .chars()
        .map(|c| match c {
            ',' => ';',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    match one_line.char_indices().nth(REASON_LIMIT) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deploy_queued_before_adoption_runs_after_it() {
        let image = ImageRef::parse("demo:v2").unwrap();
        let mut pending = Pending {
            adopt: true,
            deploy: Some(Request::Deploy(image.clone())),
        };
        assert_eq!(pending.next(), Some(Job::Adopt));
        assert_eq!(pending.next(), Some(Job::Deploy(Request::Deploy(image))));
        assert_eq!(pending.next(), None);
    }
}
