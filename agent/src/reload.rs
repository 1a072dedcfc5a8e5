//! Applying changes to a running agent: the config file's reloadable settings (tags, log
//! level, handlers, health checks, trusted plugin keys) and the installed plugins. It runs on SIGHUP,
//! `rumor reload`, after a plugin command, and when the watcher ([`crate::watch`]) sees the
//! config file, a config template or the plugin directory change.
//!
//! What fails keeps what it replaces: a config file that does not parse keeps the running
//! configuration, a plugin that does not load keeps its last good version
//! ([`Plugins::rescan`]); the rest is applied. Each failure is logged, counted, and shown by
//! `rumor info` ([`ReloadStatus`]) and the metrics. Flags and environment variables keep
//! winning over the file.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rumor_handlers::event::Tags;
use rumor_handlers::{Dispatcher, HandlerConfig};
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterHandle;
use crate::config::{AgentArgs, AgentConfig, DEFAULT_LOG_LEVEL};
use crate::health::{CheckConfig, HealthChecks};
use crate::logging::LogHub;
use crate::plugin::Plugins;

/// How reloads went, as `rumor info` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Reloads done (every trigger counts).
    pub reloads: u64,
    /// Reloads that found something broken (a config error, a plugin that did not load).
    pub failures: u64,
    /// When the last reload ran, in milliseconds since the Unix epoch.
    pub last_unix_ms: Option<u64>,
    /// What was broken at the last reload; empty when everything applied.
    pub errors: Vec<String>,
}

/// [`ReloadStatus`], shared with the control API.
pub type SharedReloadStatus = Arc<Mutex<ReloadStatus>>;

/// The reload of one agent: what it started with, and what the last reload applied.
pub struct Reloader {
    args: AgentArgs,
    pub dispatcher: Dispatcher,
    file: Option<PathBuf>,
    /// The tags the configuration gave last time, so keys removed from the file are deleted.
    configured_tags: Tags,
    /// The configuration's handlers as last applied (flags and file).
    config_handlers: Vec<HandlerConfig>,
    /// The file's checks as last applied.
    config_checks: Vec<CheckConfig>,
    /// The running checks (the file's and the plugins').
    health: HealthChecks,
    plugins: Arc<Plugins>,
    status: SharedReloadStatus,
    /// The configuration the agent started with, to say which changes a reload cannot apply.
    started: AgentConfig,
}

impl Reloader {
    pub fn new(
        args: AgentArgs,
        config: &AgentConfig,
        dispatcher: Dispatcher,
        plugins: Arc<Plugins>,
        status: SharedReloadStatus,
        health: HealthChecks,
    ) -> Self {
        Reloader {
            args,
            dispatcher,
            file: config.config_file.clone(),
            configured_tags: config.tags.clone(),
            config_handlers: config.handlers.clone(),
            config_checks: config.checks.clone(),
            health,
            plugins,
            status,
            started: config.clone(),
        }
    }

    /// The config file (if the agent has one) and the template files its handlers read: what
    /// the watcher watches besides the plugin directory.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.file.iter().cloned().collect();
        files.extend(
            self.config_handlers
                .iter()
                .filter_map(|h| h.runtime.template())
                .map(|t| t.source.path.clone()),
        );
        files
    }

    /// The file's settings a reload cannot apply, when they changed since the start: said in
    /// the reload's answer rather than ignored.
    fn restart_needed(&self) -> Option<String> {
        match self.args.resolve() {
            Ok(whole) => {
                let pending = self.started.restart_needed(&whole);
                (!pending.is_empty())
                    .then(|| format!("not applied, they need a restart: {}", pending.join(", ")))
            }
            Err(e) => Some(format!(
                "the file's other settings are not applied (they need a restart) and one is invalid: {e}"
            )),
        }
    }

    /// Re-reads the config file and the plugins and applies what loads. `Err` lists what did
    /// not (the rest was applied).
    pub async fn reload(
        &mut self,
        handle: &ClusterHandle,
        logs: &LogHub,
    ) -> Result<String, String> {
        let mut errors = Vec::new();
        let mut applied = Vec::new();
        // Said after the handlers, so the answer reads as one list, then what waits.
        let mut encryption = None;
        let mut pending = None;
        if let Some(path) = &self.file {
            match self.args.reload() {
                Ok(fresh) => {
                    self.plugins.set_trusted(fresh.plugin_trusted_keys.clone());
                    let level = fresh.log_level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL);
                    match logs.set_level(level) {
                        Ok(()) => applied.push(format!("log level {level}")),
                        Err(e) => errors.push(e.to_string()),
                    }
                    let removed: Vec<String> = self
                        .configured_tags
                        .keys()
                        .filter(|k| !fresh.tags.contains_key(*k))
                        .cloned()
                        .collect();
                    match handle.update_tags(fresh.tags.clone(), removed).await {
                        Ok(tags) => {
                            applied.push(format!("{} tags", tags.len()));
                            self.configured_tags = fresh.tags;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                    self.config_handlers = fresh.handlers;
                    self.config_checks = fresh.checks;
                    match handle.set_encryption(
                        fresh.encrypt.as_deref(),
                        fresh.encrypt_verify_incoming,
                        fresh.encrypt_verify_outgoing,
                    ) {
                        Ok(said) => encryption = Some(said),
                        Err(e) => errors.push(e),
                    }
                    applied.insert(0, format!("reloaded {}", path.display()));
                    pending = self.restart_needed();
                }
                Err(e) => errors.push(format!("{e} (the running configuration is kept)")),
            }
        }
        let (plugin_handlers, plugin_errors) = self.plugins.rescan();
        errors.extend(plugin_errors);
        let plugins = self.plugins.status().len();
        let mut handlers = self.config_handlers.clone();
        handlers.extend(plugin_handlers);
        let count = handlers.len();
        // A bad handler set changes nothing (queued events are kept).
        match self.dispatcher.reload(handlers) {
            Ok(()) => applied.push(format!("{count} handlers, {plugins} plugins")),
            Err(e) => errors.push(format!("{e} (the running handlers are kept)")),
        }
        let mut checks = self.config_checks.clone();
        checks.extend(self.plugins.checks());
        match self.health.apply(checks).await {
            // Said only where checks run: a reload report without them stays as it was.
            Ok(said) if self.health.count() > 0 => applied.push(said),
            Ok(_) => {}
            Err(e) => errors.push(format!("{e} (the running checks are kept)")),
        }
        applied.extend(encryption);
        let applied = match pending {
            Some(pending) => format!("{}; {pending}", applied.join(", ")),
            None => applied.join(", "),
        };
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.reloads += 1;
        status.last_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        if errors.is_empty() {
            status.errors.clear();
            Ok(applied)
        } else {
            status.failures += 1;
            status.errors = errors.clone();
            Err(format!(
                "{}{}",
                errors.join("; "),
                if applied.is_empty() {
                    String::new()
                } else {
                    format!(" (applied: {applied})")
                }
            ))
        }
    }
}
