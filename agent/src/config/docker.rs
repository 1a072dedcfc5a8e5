//! The `docker` key of a `[[handler]]` table: an app's container deploys (docs/containers.md).
//!
//! ```toml
//! [[handler]]
//! name = "web"
//! events = ["user:deploy", "query:deploy-status"]
//! docker = { app = "web", selector = "role=web", container_port = 8080, max_parallel = "1" }
//! ```
//!
//! Plugin manifests fill these in from settings, where every value is a rendered string:
//! numbers are taken as numbers or strings, an empty string is "not set", and `env`,
//! `labels` and `volumes` are tables and arrays or `K=V,K=V` / `A,B` strings.

use std::collections::BTreeMap;

use rumor_handlers::DockerConfig;
use rumor_handlers::docker::settings::{Parallel, Readiness, Selector};
use serde::Deserialize;

use super::parse_duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerTable {
    /// The app: the first word of a deploy payload, the prefix of its tags.
    app: String,
    /// The hosts that run it, e.g. "role=web" [default: every host with this handler].
    #[serde(default)]
    selector: String,
    /// The port the app listens on in its container.
    container_port: Number,
    /// Hosts rolling at once: a count or a percentage, e.g. "25%" [default: 1].
    max_parallel: Option<Number>,
    /// [default: 60s]
    ready_timeout: Option<String>,
    /// Pause between batches [default: 0s].
    wait: Option<String>,
    /// How long a later batch waits for the earlier ones before it halts [default: 10m].
    turn_timeout: Option<String>,
    /// How long the old container runs on after the switch [default: 2s].
    drain: Option<String>,
    /// SIGTERM to SIGKILL when a container stops [default: 10s].
    stop_grace: Option<String>,
    /// "tcp" (a connect to the container port), "docker" (the image's HEALTHCHECK),
    /// "http[:/PATH]" (a GET answering 2xx) or "command:COMMAND" (a shell command exiting 0).
    readiness: Option<String>,
    env: Option<Pairs>,
    labels: Option<Pairs>,
    volumes: Option<List>,
    /// no, always, unless-stopped, on-failure[:N] [default: unless-stopped].
    restart: Option<String>,
    /// The host address the port is published on [default: 0.0.0.0].
    host_ip: Option<String>,
    /// A user event sent when the app's container dies.
    notify: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn text(&self) -> String {
        match self {
            Number::Int(n) => n.to_string(),
            Number::Text(s) => s.trim().to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Pairs {
    Table(BTreeMap<String, String>),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum List {
    Items(Vec<String>),
    Text(String),
}

/// A value that is set: not absent, not an empty rendered setting.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl DockerTable {
    pub(crate) fn to_config(&self) -> Result<DockerConfig, String> {
        let port_text = self.container_port.text();
        let port = port_text
            .parse::<u16>()
            .map_err(|_| format!("docker container_port {port_text:?}: use a port, 1-65535"))?;
        let mut config = DockerConfig::new(self.app.trim(), port);
        config.selector = Selector::parse(&self.selector)?;
        if let Some(n) = self
            .max_parallel
            .as_ref()
            .map(Number::text)
            .filter(|s| !s.is_empty())
        {
            config.max_parallel = Parallel::parse(&n)?;
        }
        let duration = |name: &'static str, value: &Option<String>, default| match set(value) {
            Some(text) => parse_duration(name, text).map_err(|e| e.to_string()),
            None => Ok(default),
        };
        config.ready_timeout = duration(
            "docker ready_timeout",
            &self.ready_timeout,
            config.ready_timeout,
        )?;
        config.wait = duration("docker wait", &self.wait, config.wait)?;
        config.turn_timeout = duration(
            "docker turn_timeout",
            &self.turn_timeout,
            config.turn_timeout,
        )?;
        config.drain = duration("docker drain", &self.drain, config.drain)?;
        config.stop_grace = duration("docker stop_grace", &self.stop_grace, config.stop_grace)?;
        config.readiness = Readiness::parse(set(&self.readiness).unwrap_or(""))?;
        config.env = pairs("env", &self.env)?;
        config.labels = pairs("labels", &self.labels)?;
        config.volumes = match &self.volumes {
            Some(List::Items(items)) => items.clone(),
            Some(List::Text(text)) => split(text).map(str::to_string).collect(),
            None => Vec::new(),
        };
        if let Some(restart) = set(&self.restart) {
            config.restart = restart.to_string();
        }
        if let Some(host_ip) = set(&self.host_ip) {
            config.host_ip = host_ip.to_string();
        }
        config.notify = set(&self.notify).map(str::to_string);
        config.validate()?;
        Ok(config)
    }
}

fn split(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn pairs(name: &str, value: &Option<Pairs>) -> Result<BTreeMap<String, String>, String> {
    match value {
        None => Ok(BTreeMap::new()),
        Some(Pairs::Table(table)) => Ok(table.clone()),
        Some(Pairs::Text(text)) => split(text)
            .map(|item| {
                item.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .ok_or_else(|| format!("docker {name} {item:?}: use KEY=VALUE, joined by ','"))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<DockerConfig, String> {
        let table: DockerTable = toml::from_str(text).map_err(|e| e.to_string())?;
        table.to_config()
    }

    #[test]
    fn numbers_and_lists_as_plugins_render_them() {
        let config = table(
            r#"app = "web"
               selector = "role=web"
               container_port = "8080"
               max_parallel = "50%"
               drain = ""
               turn_timeout = "90s"
               env = "A=1, B=2"
               volumes = "/srv:/data:ro""#,
        )
        .unwrap();
        assert_eq!(config.container_port, 8080);
        assert_eq!(config.max_parallel, Parallel::Percent(50));
        assert_eq!(config.drain, DockerConfig::new("web", 1).drain);
        assert_eq!(config.turn_timeout, std::time::Duration::from_secs(90));
        assert_eq!(config.env.len(), 2);
        assert_eq!(config.volumes, ["/srv:/data:ro"]);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cases = [
            (
                "max_parallel",
                "container_port = 80\nmax_parallel = \"lots\"",
            ),
            ("container_port", "container_port = 99999"),
            ("readiness", "container_port = 80\nreadiness = \"vibes\""),
            ("turn_timeout", "container_port = 80\nturn_timeout = \"0s\""),
            (
                "turn_timeout",
                "container_port = 80\nturn_timeout = \"soon\"",
            ),
        ];
        for (setting, rest) in cases {
            let e = table(&format!("app = \"web\"\n{rest}")).unwrap_err();
            assert!(e.contains(setting), "{rest}: {e}");
        }
    }
}
