//! A `docker` handler's settings ([`DockerConfig`]) and what a `deploy` event asks for
//! ([`DeployRequest`]), parsed and checked before anything touches the Docker Engine.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// The user event that starts a rollout, and the query `rumor deploy status` asks.
pub const DEPLOY_EVENT: &str = "deploy";
pub const STATUS_QUERY: &str = "deploy-status";

/// One managed app: which hosts run it, how its container is made, how a rollout goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    /// The app's name: the first word of a deploy payload, the prefix of its tags.
    pub app: String,
    /// The hosts that run it: every pair must match their tags (`role=web`; a bare key
    /// matches any value).
    pub selector: Selector,
    /// The port the app listens on inside its container.
    pub container_port: u16,
    /// How many hosts roll at once.
    pub max_parallel: Parallel,
    /// How long a new container may take to become ready before the deploy fails.
    pub ready_timeout: Duration,
    /// Between batches: how long a host waits after the earlier batches are ready.
    pub wait: Duration,
    /// How long a host of a later batch waits for the earlier ones before it halts.
    pub turn_timeout: Duration,
    /// How long the old container keeps running after the switch.
    pub drain: Duration,
    /// How long a stopped container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    pub readiness: Readiness,
    /// Environment of the container.
    pub env: BTreeMap<String, String>,
    /// Labels added to the container, beside rumor's own.
    pub labels: BTreeMap<String, String>,
    /// Bind mounts, `HOST:CONTAINER[:ro]`.
    pub volumes: Vec<String>,
    /// Docker's restart policy: `no`, `always`, `unless-stopped`, `on-failure[:N]`.
    pub restart: String,
    /// The host address the port is published on.
    pub host_ip: String,
    /// A user event sent when the app's container dies, or `None`.
    pub notify: Option<String>,
}

impl DockerConfig {
    /// Settings with the defaults, for `app` listening on `container_port`.
    pub fn new(app: impl Into<String>, container_port: u16) -> DockerConfig {
        DockerConfig {
            app: app.into(),
            selector: Selector::default(),
            container_port,
            max_parallel: Parallel::Count(1),
            ready_timeout: Duration::from_secs(60),
            wait: Duration::ZERO,
            turn_timeout: Duration::from_secs(600),
            drain: Duration::from_secs(2),
            stop_grace: Duration::from_secs(10),
            readiness: Readiness::Tcp,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            volumes: Vec::new(),
            restart: "unless-stopped".into(),
            host_ip: "0.0.0.0".into(),
            notify: None,
        }
    }

    /// Checks what the types cannot; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_app(&self.app) {
            return Err(format!(
                "app {:?}: use letters, digits, '-' and '_' (it prefixes tags and names containers)",
                self.app
            ));
        }
        if self.container_port == 0 {
            return Err("container_port must be 1-65535".into());
        }
        if self.ready_timeout.is_zero() {
            return Err("ready_timeout must be above zero".into());
        }
        if self.turn_timeout.is_zero() {
            return Err("turn_timeout must be above zero".into());
        }
        let (name, retries) = self
            .restart
            .split_once(':')
            .map_or((self.restart.as_str(), None), |(n, r)| (n, Some(r)));
        let known = ["no", "always", "unless-stopped", "on-failure"].contains(&name);
        if !known || retries.is_some_and(|r| name != "on-failure" || r.parse::<u32>().is_err()) {
            return Err(format!(
                "restart {:?}: use no, always, unless-stopped or on-failure[:N]",
                self.restart
            ));
        }
        for volume in &self.volumes {
            if volume.split(':').count() < 2 {
                return Err(format!("volume {volume:?}: use HOST:CONTAINER[:ro]"));
            }
        }
        Ok(())
    }
}

fn valid_app(app: &str) -> bool {
    !app.is_empty()
        && app.len() <= 40
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A tag selector: `role=web,dc=east`; a bare `KEY` matches any value of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<(String, Option<String>)>);

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut pairs = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
                None => (item, None),
            };
            if key.is_empty() {
                return Err(format!("selector {text:?}: {item:?} has no tag name"));
            }
            pairs.push((key.to_string(), value));
        }
        Ok(Selector(pairs))
    }

    /// Whether `tags` hold every pair (an empty selector matches every host).
    pub fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(key, value)| match value {
            Some(v) => tags.get(key) == Some(v),
            None => tags.contains_key(key),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| v.as_ref().map_or(k.clone(), |v| format!("{k}={v}")))
            .collect();
        f.write_str(&items.join(","))
    }
}

/// How many hosts roll at once: a count, or a percentage of the matching hosts (rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    Count(usize),
    Percent(u8),
}

impl Parallel {
    pub fn parse(text: &str) -> Result<Parallel, String> {
        let text = text.trim();
        let bad =
            || format!("max_parallel {text:?}: use a count such as 2 or a percentage such as 25%");
        if let Some(percent) = text.strip_suffix('%') {
            match percent.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Parallel::Percent(p)),
                _ => Err(bad()),
            }
        } else {
            match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Parallel::Count(n)),
                _ => Err(bad()),
            }
        }
    }

    /// The batch size among `hosts` matching hosts: at least one.
    pub fn batch_size(self, hosts: usize) -> usize {
        match self {
            Parallel::Count(n) => n,
            Parallel::Percent(p) => (hosts * usize::from(p)).div_ceil(100),
        }
        .max(1)
    }
}

/// How a new container is judged ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// A TCP connect to the container port succeeds (the default).
    Tcp,
    /// Docker reports the image's health check `healthy`.
    Docker,
    /// An HTTP GET of this path on the container port answers 2xx: the health checks' `http`
    /// kind, aimed at the new container.
    Http { path: String },
    /// `/bin/sh -c COMMAND` exits 0: the health checks' `command` kind, told where the new
    /// container is (`RUMOR_APP`, `RUMOR_CONTAINER_IP`, `RUMOR_CONTAINER_PORT`,
    /// `RUMOR_HOST_PORT`).
    Command { command: String },
}

impl Readiness {
    pub fn parse(text: &str) -> Result<Readiness, String> {
        match text.trim() {
            "" | "tcp" => Ok(Readiness::Tcp),
            "docker" => Ok(Readiness::Docker),
            "http" => Ok(Readiness::Http { path: "/".into() }),
            other => match (other.strip_prefix("http:"), other.strip_prefix("command:")) {
                (Some(path), _)
                    if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace()) =>
                {
                    Ok(Readiness::Http { path: path.into() })
                }
                (_, Some(command)) if !command.trim().is_empty() => Ok(Readiness::Command {
                    command: command.trim().into(),
                }),
                _ => Err(format!(
                    "readiness {other:?}: use tcp (a connect to the container port), docker (the \
                     image's health check), http[:/PATH] (a GET on the container port answering \
                     2xx) or command:COMMAND (a shell command exiting 0)"
                )),
            },
        }
    }
}

/// A deploy event's payload: `APP IMAGE[:TAG]`, or `{"app": "APP", "image": "IMAGE[:TAG]"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub app: String,
    pub image: ImageRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    app: String,
    image: String,
}

/// Why a payload is not a deploy request; the app, when it could be read, so its failure can
/// be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub app: Option<String>,
    pub reason: String,
}

impl DeployRequest {
    pub fn parse(payload: &[u8]) -> Result<DeployRequest, BadRequest> {
        let text = String::from_utf8_lossy(payload);
        let text = text.trim();
        let bad = |app: Option<&str>, reason: String| BadRequest {
            app: app.map(str::to_string),
            reason,
        };
        let (app, image) = if text.starts_with('{') {
            let json: JsonRequest = serde_json::from_str(text).map_err(|e| {
                bad(
                    None,
                    format!("deploy payload is not {{\"app\": …, \"image\": …}}: {e}"),
                )
            })?;
            (json.app, json.image)
        } else {
            let mut words = text.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(app), Some(image), None) => (app.to_string(), image.to_string()),
                _ => {
                    return Err(bad(
                        text.split_whitespace().next(),
                        format!("deploy payload {text:?} is not 'APP IMAGE[:TAG]'"),
                    ));
                }
            }
        };
        let image = ImageRef::parse(&image).map_err(|reason| bad(Some(&app), reason))?;
        Ok(DeployRequest { app, image })
    }
}

/// An image reference as Docker takes it, split into its name and tag (`latest` when it has
/// none). The tag is the version a host publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| format!("image reference {text:?} is malformed: {why}");
        if text.is_empty() || text.len() > 255 {
            return Err(bad("empty or longer than 255 characters"));
        }
        if text.contains('@') {
            return Err(bad("digests are not supported; name a tag"));
        }
        // The tag follows the last ':' after the last '/' (a registry host may have a port).
        let slash = text.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match text[slash..].rfind(':') {
            Some(i) => (&text[..slash + i], &text[slash + i + 1..]),
            None => (text, "latest"),
        };
        let name_ok = !name.is_empty()
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-:".contains(c))
            });
        if !name_ok {
            return Err(bad(
                "a name is lowercase letters, digits, '.', '_', '-', parts joined by '/'",
            ));
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !tag_ok {
            return Err(bad("a tag is letters, digits, '.', '_', '-'"));
        }
        Ok(ImageRef {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_kinds_parse_and_a_bad_one_says_what_is_accepted() {
        assert_eq!(Readiness::parse("").unwrap(), Readiness::Tcp);
        assert_eq!(Readiness::parse("docker").unwrap(), Readiness::Docker);
        assert_eq!(
            Readiness::parse("http").unwrap(),
            Readiness::Http { path: "/".into() }
        );
        assert_eq!(
            Readiness::parse("http:/healthz").unwrap(),
            Readiness::Http {
                path: "/healthz".into()
            }
        );
        assert_eq!(
            Readiness::parse("command: curl -fs http://$RUMOR_CONTAINER_IP/ ").unwrap(),
            Readiness::Command {
                command: "curl -fs http://$RUMOR_CONTAINER_IP/".into()
            }
        );
        for bad in [
            "http:healthz",
            "http:/a b",
            "vibes",
            "command:",
            "command:  ",
        ] {
            let e = Readiness::parse(bad).unwrap_err();
            assert!(
                e.contains("http[:/PATH]") && e.contains("command:COMMAND"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn payloads_in_both_forms() {
        let plain = DeployRequest::parse(b" web demo:v2\n").unwrap();
        assert_eq!(plain.app, "web");
        assert_eq!(plain.image.to_string(), "demo:v2");
        let json =
            DeployRequest::parse(br#"{"app":"web","image":"registry.local:5000/web"}"#).unwrap();
        assert_eq!(json.image.name, "registry.local:5000/web");
        assert_eq!(json.image.tag, "latest");
    }

    #[test]
    fn bad_payloads_say_why() {
        let e = DeployRequest::parse(b"web").unwrap_err();
        assert!(e.reason.contains("APP IMAGE"), "{e:?}");
        let e = DeployRequest::parse(b"web Demo:v1").unwrap_err();
        assert_eq!(e.app.as_deref(), Some("web"));
        assert!(e.reason.contains("malformed"), "{e:?}");
        assert!(DeployRequest::parse(b"web demo:").is_err());
        assert!(DeployRequest::parse(b"web demo:v1 extra").is_err());
        assert!(DeployRequest::parse(b"{\"app\":1}").is_err());
    }

    #[test]
    fn parallel_counts_and_percentages() {
        assert_eq!(Parallel::parse("1").unwrap().batch_size(3), 1);
        assert_eq!(Parallel::parse("50%").unwrap().batch_size(3), 2);
        assert_eq!(Parallel::parse("100%").unwrap().batch_size(3), 3);
        assert_eq!(Parallel::parse("1%").unwrap().batch_size(3), 1);
        assert!(Parallel::parse("0").is_err());
        assert!(Parallel::parse("150%").is_err());
    }

    #[test]
    fn selectors_match_tags() {
        let s = Selector::parse("role=web, dc").unwrap();
        let mut tags = BTreeMap::from([("role".to_string(), "web".to_string())]);
        assert!(!s.matches(&tags));
        tags.insert("dc".into(), "east".into());
        assert!(s.matches(&tags));
        assert_eq!(s.to_string(), "role=web,dc");
    }

    #[test]
    fn settings_are_checked() {
        let mut config = DockerConfig::new("web", 8080);
        assert!(config.validate().is_ok());
        config.restart = "on-failure:3".into();
        assert!(config.validate().is_ok());
        config.restart = "sometimes".into();
        assert!(config.validate().is_err());
        assert!(DockerConfig::new("we b", 8080).validate().is_err());
    }
}
