//! What the control API's requests are answered from: the running agent's [`ControlContext`],
//! and per listener, [`Served`] (that context, which endpoints the listener serves, and its
//! shutdown signal). The endpoints take the context; only routing and the server see `Served`.

use std::path::PathBuf;
use std::time::Instant;

use rumor_handlers::event::Event;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::auth::ControlAuth;
use super::limits::ConnectionLimits;
use crate::cluster::ClusterHandle;
use crate::logging::LogHub;

/// A reload request: the agent answers with a message on success or an error text.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// Everything the control API needs from the running agent.
#[derive(Clone)]
pub struct ControlContext {
    pub cluster: ClusterHandle,
    /// The cluster's event stream, for `GET /v1/monitor`.
    pub events: broadcast::Sender<Event>,
    pub logs: LogHub,
    /// `POST /v1/reload` sends a reply channel here and waits for the agent's answer.
    pub reload: mpsc::Sender<ReloadRequest>,
    pub agent: AgentInfo,
    /// The handler dispatcher, for its status in `GET /v1/info`.
    pub handlers: rumor_handlers::Dispatcher,
    /// The token TCP requests must carry (a Unix socket needs none).
    pub auth: ControlAuth,
    /// How many connections each listener keeps, and what was refused.
    pub limits: ConnectionLimits,
    /// The installed plugins, for `rumor plugin` and `GET /v1/info`.
    pub plugins: std::sync::Arc<crate::plugin::Plugins>,
    /// How reloads went, for `GET /v1/info` and the metrics.
    pub reloads: crate::reload::SharedReloadStatus,
    /// The DNS server's counters, for the metrics (`None`: DNS is off).
    pub dns: Option<std::sync::Arc<crate::dns::DnsStats>>,
    /// What each health check last did, for `GET /v1/checks` and the metrics.
    pub checks: crate::health::CheckBoard,
}

impl ControlContext {
    /// How reloads went, now.
    pub fn reload_status(&self) -> crate::reload::ReloadStatus {
        self.reloads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every health check, by name, as it is now.
    pub fn checks(&self) -> Vec<crate::health::CheckStatus> {
        self.checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// The agent process, as `GET /v1/info` reports it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub started: Instant,
    /// Where the control API is served (as shown to users).
    pub control: String,
    pub data_dir: PathBuf,
}

/// What one listener serves; shared by every request it accepts.
pub(super) struct Served {
    pub ctx: ControlContext,
    pub scope: Scope,
    /// Becomes `true` when the server shuts down; long-lived responses (monitor) end then.
    pub shutdown: watch::Receiver<bool>,
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The whole control API (token required on TCP).
    Api,
    /// `GET /metrics` only, without a token (`--metrics ADDR`).
    Metrics,
}

impl Scope {
    /// The listener in log lines.
    pub fn listener_name(self) -> &'static str {
        match self {
            Scope::Api => "control API",
            Scope::Metrics => "metrics listener",
        }
    }
}
