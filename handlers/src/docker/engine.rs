//! The Docker Engine calls a deploy makes (bollard, on the local socket), each returning an
//! error in words that name the container or image.
//!
//! Every container rumor starts carries its labels ([`LABEL_NODE`], [`LABEL_APP`], ...): an
//! agent lists and touches only the containers labelled with its own node name, so several
//! agents can share one Engine (a test, or a host running several agents) without taking each
//! other's containers.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EventMessage, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::settings::{DockerConfig, ImageRef};

pub const LABEL_MANAGED: &str = "rumor.managed";
pub const LABEL_NODE: &str = "rumor.node";
pub const LABEL_APP: &str = "rumor.app";
pub const LABEL_VERSION: &str = "rumor.version";
pub const LABEL_IMAGE: &str = "rumor.image";
/// Orders an app's containers: the newest is the one serving.
pub const LABEL_SERIAL: &str = "rumor.serial";

/// A container of this node's app, as the Engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    pub id: String,
    pub name: String,
    pub version: String,
    pub image: String,
    pub serial: u64,
    pub running: bool,
}

/// What a deploy needs to know of a running container.
#[derive(Debug, Clone, Default)]
pub struct Inspected {
    pub running: bool,
    pub exit_code: Option<i64>,
    /// Docker's health state (`starting`, `healthy`, `unhealthy`), `None` without a health check.
    pub health: Option<String>,
    pub ip: Option<IpAddr>,
    pub host_port: Option<u16>,
}

/// The local Docker Engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// How long one Engine call may take: an Engine that stops answering fails the deploy with a
/// message instead of holding the app's worker for ever.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// `call`, failing with a message naming `what` when the Engine has not answered in time.
async fn limited<T>(
    what: impl FnOnce() -> String,
    call: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<Result<T, bollard::errors::Error>, String> {
    tokio::time::timeout(CALL_LIMIT, call).await.map_err(|_| {
        format!(
            "{}: the Docker Engine did not answer within {CALL_LIMIT:?}",
            what()
        )
    })
}

fn says(what: String) -> impl FnOnce(bollard::errors::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// A 404 from the Engine: the thing is not there.
fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl Engine {
    /// Connects to `DOCKER_HOST` or `/var/run/docker.sock` and agrees on an API version.
    pub async fn connect() -> Result<Engine, String> {
        let docker = Docker::connect_with_unix_defaults()
            .map_err(says("cannot reach the Docker Engine".into()))?;
        let docker = limited(
            || "cannot reach the Docker Engine".into(),
            docker.negotiate_version(),
        )
        .await?
        .map_err(says(
            "cannot reach the Docker Engine (is it running, may this user use its socket?)".into(),
        ))?;
        Ok(Engine { docker })
    }

    /// Whether the image is on this host. rumor never pulls: images arrive by the host's
    /// own means (a registry pull, `docker load`) before the deploy names them.
    pub async fn has_image(&self, image: &ImageRef) -> Result<bool, String> {
        let what = || format!("cannot look up image {image}");
        match limited(what, self.docker.inspect_image(&image.to_string())).await? {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(format!("cannot look up image {image}: {e}")),
        }
    }

    /// This node's containers of `app`, running or not, oldest first.
    pub async fn managed(&self, node: &str, app: &str) -> Result<Vec<Managed>, String> {
        let labels = vec![format!("{LABEL_NODE}={node}"), format!("{LABEL_APP}={app}")];
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let what = || format!("cannot list the containers of app {app}");
        let list = limited(what, self.docker.list_containers(Some(options)))
            .await?
            .map_err(says(format!("cannot list the containers of app {app}")))?;
        let mut managed: Vec<Managed> = list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
                Managed {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string()))
                        .unwrap_or_default(),
                    version: label(LABEL_VERSION),
                    image: label(LABEL_IMAGE),
                    serial: label(LABEL_SERIAL).parse().unwrap_or(0),
                    running: c.state.is_some_and(|s| s.to_string() == "running"),
                }
            })
            .collect();
        managed.sort_by_key(|m| m.serial);
        Ok(managed)
    }

    /// Creates and starts a container of `image` for `app` on `node`, its port published on a
    /// free host port; returns its id. A container that was created but would not start is
    /// removed again.
    pub async fn start_new(
        &self,
        node: &str,
        config: &DockerConfig,
        image: &ImageRef,
        serial: u64,
    ) -> Result<String, String> {
        let port = format!("{}/tcp", config.container_port);
        let mut labels: HashMap<String, String> = config.labels.clone().into_iter().collect();
        labels.extend([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_NODE.to_string(), node.to_string()),
            (LABEL_APP.to_string(), config.app.clone()),
            (LABEL_VERSION.to_string(), image.tag.clone()),
            (LABEL_IMAGE.to_string(), image.to_string()),
            (LABEL_SERIAL.to_string(), serial.to_string()),
        ]);
        let (policy, retries) = match config.restart.split_once(':') {
            Some((name, n)) => (name, n.parse().ok()),
            None => (config.restart.as_str(), None),
        };
        let policy = match policy {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(config.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: Some(vec![port.clone()]),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    port,
                    Some(vec![PortBinding {
                        host_ip: Some(config.host_ip.clone()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                binds: (!config.volumes.is_empty()).then(|| config.volumes.clone()),
                restart_policy: Some(RestartPolicy {
                    name: Some(policy),
                    maximum_retry_count: retries,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = container_name(node, &config.app, &image.tag, serial);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let what = || format!("cannot create container {name} of {image}");
        let created = limited(what, self.docker.create_container(Some(options), body))
            .await?
            .map_err(says(format!("cannot create container {name} of {image}")))?;
        let what = || format!("cannot start container {name} of {image}");
        if let Err(e) = limited(what, self.docker.start_container(&created.id, None))
            .await
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            self.remove(&created.id, Duration::ZERO).await;
            return Err(format!("cannot start container {name} of {image}: {e}"));
        }
        Ok(created.id)
    }

    /// Starts a container that exists but is stopped.
    pub async fn start(&self, id: &str) -> Result<(), String> {
        limited(
            || format!("cannot start container {id}"),
            self.docker.start_container(id, None),
        )
        .await?
        .map_err(says(format!("cannot start container {id}")))
    }

    pub async fn inspect(&self, id: &str) -> Result<Inspected, String> {
        let what = || format!("cannot inspect container {id}");
        let c = limited(what, self.docker.inspect_container(id, None))
            .await?
            .map_err(says(format!("cannot inspect container {id}")))?;
        let state = c.state.unwrap_or_default();
        let network = c.network_settings.unwrap_or_default();
        let host_port = network
            .ports
            .unwrap_or_default()
            .into_values()
            .flatten()
            .flatten()
            .find_map(|b| b.host_port.and_then(|p| p.parse().ok()));
        let ip = network
            .networks
            .unwrap_or_default()
            .into_values()
            .find_map(|n| n.ip_address.and_then(|ip| ip.parse().ok()));
        Ok(Inspected {
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
            ip,
            host_port,
        })
    }

    /// Stops the container (SIGTERM, then SIGKILL after `grace`) and removes it; one that is
    /// already gone is fine. Errors are logged, not returned: the deploy has moved on.
    pub async fn remove(&self, id: &str, grace: Duration) {
        let stop = StopContainerOptionsBuilder::default()
            .t(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX))
            .build();
        if let Err(e) = self.docker.stop_container(id, Some(stop)).await
            && !not_found(&e)
        {
            tracing::debug!(container = id, "stop: {e}");
        }
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(e) = self.docker.remove_container(id, Some(remove)).await
            && !not_found(&e)
        {
            tracing::warn!(container = id, "cannot remove container: {e}");
        }
    }

    /// The container's last `lines` lines of output, for a log line or a notify event.
    pub async fn log_tail(&self, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut out = String::new();
        let mut logs = self.docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&chunk.to_string());
        }
        out.trim().to_string()
    }

    /// Container events (start, die, destroy) of this node's containers since `since` (Unix
    /// seconds).
    pub fn events(
        &self,
        node: &str,
        since: i64,
    ) -> impl Stream<Item = Result<EventMessage, bollard::errors::Error>> + use<> {
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            ("label", vec![format!("{LABEL_NODE}={node}")]),
            (
                "event",
                vec![
                    "start".to_string(),
                    "die".to_string(),
                    "destroy".to_string(),
                ],
            ),
        ]);
        let options = EventsOptionsBuilder::default()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        self.docker.events(Some(options))
    }
}

/// `rumor-NODE-APP-VERSION-SERIAL`, with what Docker does not allow in a name replaced.
fn container_name(node: &str, app: &str, version: &str, serial: u64) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "rumor-{}-{}-{}-{serial}",
        clean(node),
        clean(app),
        clean(version)
    )
}

/// Follows this node's container events from now on, across reconnections (resuming where the
/// last one ended), into a channel: the request is made at once, so a container that dies
/// while a deploy keeps the worker busy is reported when the worker is free again. Ends when
/// the receiver is dropped.
pub fn follow_events(engine: Engine, node: String) -> mpsc::Receiver<EventMessage> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        loop {
            let mut stream = engine.events(&node, since).boxed();
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    item = stream.next() => match item {
                        Some(Ok(event)) => {
                            since = event.time.unwrap_or(since);
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(node, "Docker event stream: {e}; reconnecting");
                            break;
                        }
                        None => break,
                    },
                }
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    rx
}
