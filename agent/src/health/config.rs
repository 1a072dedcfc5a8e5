//! `[[check]]` tables (in the config file and in plugin manifests) and the checks they
//! describe, validated: a typo is an error that names the check and the key, never a check
//! that silently does nothing.
//!
//! ```toml
//! [[check]]
//! name = "web"                        # the tag is health_web
//! http = "http://127.0.0.1:8080/health"
//! status = 200                        # [default: any 2xx passes, 429 warns]
//! interval = "5s"                     # [default: 10s]
//! timeout = "2s"                      # [default: 5s, at most the interval]
//! rise = 2                            # passing results in a row to pass [default: 2]
//! fall = 2                            # failing results in a row to fail [default: 2]
//! notify = "health"                   # a user event on every change [default: none]
//! ```

use std::time::Duration;

use hyper::Uri;
use serde::{Deserialize, Serialize};

use crate::cluster::HEALTH_TAG_PREFIX;
use crate::cluster::message::{check_event_name, check_tag_key};
use crate::config::parse_duration;

/// Default time between two runs of a check.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time a run may take (capped at the interval).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default results in a row that flip a check's state.
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 2;
/// The shortest interval: a check is a process, a connection, every interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// The most results in a row `rise` and `fall` may ask for.
pub const MAX_RISE_FALL: u32 = 100;

/// One `[[check]]` table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckTable {
    /// The check's name; its state is the tag `health_NAME`.
    pub name: Option<String>,
    /// Run as `/bin/sh -c COMMAND`: exit 0 passing, 1 warning, anything else critical.
    pub command: Option<String>,
    /// `GET` this `http://` URL: any 2xx passing, 429 warning, else critical (or `status`).
    pub http: Option<String>,
    /// Connect to this `HOST:PORT`: connected is passing, else critical.
    pub tcp: Option<String>,
    /// With `http`: the one status that passes (any other is critical).
    pub status: Option<u16>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// A user event sent on every change of state, with the change as JSON.
    pub notify: Option<String>,
}

/// What a check does each interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Command(String),
    Http(HttpTarget),
    Tcp(String),
}

impl Probe {
    /// `command`, `http` or `tcp`: the key that set it.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Command(_) => "command",
            Probe::Http(_) => "http",
            Probe::Tcp(_) => "tcp",
        }
    }

    /// The command, URL or address.
    pub fn target(&self) -> &str {
        match self {
            Probe::Command(c) => c,
            Probe::Http(h) => &h.url,
            Probe::Tcp(a) => a,
        }
    }
}

/// An `http` check's URL, taken apart once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTarget {
    pub url: String,
    pub host: String,
    pub port: u16,
    /// What the `Host` header says: the URL's authority.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// The one status that passes; `None`: 2xx pass, 429 warns.
    pub status: Option<u16>,
}

/// A valid check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckConfig {
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub notify: Option<String>,
}

impl CheckConfig {
    /// The tag this check publishes its state under: `health_NAME`.
    pub fn tag(&self) -> String {
        format!("{HEALTH_TAG_PREFIX}{}", self.name)
    }
}

/// The longest check name: its tag key (`health_NAME`) may be 64 bytes.
pub const MAX_NAME: usize = 64 - HEALTH_TAG_PREFIX.len();

impl CheckTable {
    /// The check this table describes, named `name` (the table's own, or the plugin's
    /// `PLUGIN.NAME`). Errors say `check "NAME": what is wrong, and what to write`.
    pub fn to_config(&self, name: Option<String>) -> Result<CheckConfig, String> {
        let name = name
            .or_else(|| self.name.clone())
            .ok_or("a [[check]] needs a `name`: its state is published as the tag health_NAME")?;
        let invalid = |message: String| format!("check {name:?}: {message}");
        check_name(&name).map_err(invalid)?;
        let probe = self.probe().map_err(invalid)?;
        let duration = |key: &'static str, value: &Option<String>, default: Duration| {
            value.as_deref().map_or(Ok(default), |v| {
                parse_duration(key, v).map_err(|e| invalid(e.to_string()))
            })
        };
        let interval = duration("interval", &self.interval, DEFAULT_INTERVAL)?;
        if interval < MIN_INTERVAL {
            return Err(invalid(format!(
                "interval {interval:?} is too short: the shortest is {MIN_INTERVAL:?}"
            )));
        }
        let timeout = duration("timeout", &self.timeout, DEFAULT_TIMEOUT.min(interval))?;
        if timeout.is_zero() || timeout > interval {
            return Err(invalid(format!(
                "timeout {timeout:?} must be above zero and at most the interval ({interval:?}): \
                 a run that outlasts its interval would delay the next"
            )));
        }
        let count = |key: &str, value: Option<u32>, default: u32| match value {
            None => Ok(default),
            Some(n) if (1..=MAX_RISE_FALL).contains(&n) => Ok(n),
            Some(n) => Err(invalid(format!(
                "{key} = {n}: give the results in a row that flip the state, 1 to {MAX_RISE_FALL}"
            ))),
        };
        let rise = count("rise", self.rise, DEFAULT_RISE)?;
        let fall = count("fall", self.fall, DEFAULT_FALL)?;
        let notify = match &self.notify {
            Some(event) => {
                check_event_name(event).map_err(|e| invalid(format!("notify: {e}")))?;
                Some(event.clone())
            }
            None => None,
        };
        Ok(CheckConfig {
            name,
            probe,
            interval,
            timeout,
            rise,
            fall,
            notify,
        })
    }

    fn probe(&self) -> Result<Probe, String> {
        let set: Vec<&str> = [
            ("command", self.command.is_some()),
            ("http", self.http.is_some()),
            ("tcp", self.tcp.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if set.len() != 1 {
            return Err(format!(
                "set exactly one of `command` (a shell command), `http` (a URL to GET) or `tcp` \
                 (HOST:PORT to connect to){}",
                if set.is_empty() {
                    String::new()
                } else {
                    format!("; it sets {}", set.join(" and "))
                }
            ));
        }
        if self.status.is_some() && self.http.is_none() {
            return Err(
                "`status` is the HTTP status an `http` check expects; this check \
                        has no `http`"
                    .into(),
            );
        }
        if let Some(command) = &self.command {
            if command.trim().is_empty() {
                return Err("`command` is empty".into());
            }
            return Ok(Probe::Command(command.clone()));
        }
        if let Some(url) = &self.http {
            return http_target(url, self.status).map(Probe::Http);
        }
        let addr = self.tcp.clone().unwrap_or_default();
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(Probe::Tcp(addr))
            }
            _ => Err(format!(
                "tcp = {addr:?} is not HOST:PORT, e.g. \"127.0.0.1:6379\" or \"[::1]:80\""
            )),
        }
    }
}

/// A check name: what a tag key allows (letters, digits, `.`, `_`, `-`), at most
/// [`MAX_NAME`] bytes.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        return Err(format!(
            "the name is {} bytes; the limit is {MAX_NAME} (the tag {HEALTH_TAG_PREFIX}NAME is a \
             tag key of at most 64)",
            name.len()
        ));
    }
    check_tag_key(name).map_err(|e| e.replace("tag key", "check name"))
}

fn http_target(url: &str, status: Option<u16>) -> Result<HttpTarget, String> {
    let uri: Uri = url.parse().map_err(|e| {
        format!("http = {url:?} is not a URL ({e}); e.g. \"http://127.0.0.1:8080/health\"")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "http = {url:?}: https is not supported; check the plain port, or use a \
                 `command` check with curl"
            ));
        }
        _ => {
            return Err(format!(
                "http = {url:?} must start with http://, e.g. \"http://127.0.0.1:8080/health\""
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("http = {url:?} names no host"))?;
    if let Some(status) = status
        && !(100..=599).contains(&status)
    {
        return Err(format!(
            "status = {status} is not an HTTP status (100 to 599)"
        ));
    }
    Ok(HttpTarget {
        url: url.to_string(),
        host: authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_string(),
        path: uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
        status,
    })
}

/// Refuses two checks of one name (a config check and a plugin's, say).
pub fn check_unique(checks: &[CheckConfig]) -> Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for check in checks {
        if !seen.insert(check.name.as_str()) {
            return Err(format!(
                "two checks are named {:?}: each publishes the tag {}, so names must differ",
                check.name,
                check.tag()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CheckConfig, String> {
        let table: CheckTable = toml::from_str(text).map_err(|e| e.message().to_string())?;
        table.to_config(None)
    }

    #[test]
    fn defaults_and_each_kind() {
        let c = parse("name = \"web\"\ncommand = \"true\"").unwrap();
        assert_eq!(c.tag(), "health_web");
        assert_eq!((c.interval, c.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        assert_eq!((c.rise, c.fall, c.notify), (2, 2, None));
        let c = parse(
            "name = \"h\"\nhttp = \"http://[::1]:81/x?y=1\"\nstatus = 204\ninterval = \"1s\"",
        )
        .unwrap();
        let Probe::Http(h) = &c.probe else { panic!() };
        assert_eq!(
            (h.host.as_str(), h.port, h.path.as_str()),
            ("::1", 81, "/x?y=1")
        );
        assert_eq!(c.timeout, Duration::from_secs(1), "capped at the interval");
        let c = parse("name = \"t\"\ntcp = \"localhost:6379\"\nnotify = \"health\"").unwrap();
        assert_eq!(c.probe, Probe::Tcp("localhost:6379".into()));
        assert_eq!(c.notify.as_deref(), Some("health"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("command = \"true\"", "needs a `name`"),
            (
                "name = \"a b\"\ncommand = \"true\"",
                "check name \"a b\" contains ' '",
            ),
            ("name = \"x\"", "set exactly one of"),
            (
                "name = \"x\"\ncommand = \"true\"\ntcp = \"a:1\"",
                "it sets command and tcp",
            ),
            ("name = \"x\"\ntcp = \"nohost\"", "is not HOST:PORT"),
            (
                "name = \"x\"\nhttp = \"https://a/\"",
                "https is not supported",
            ),
            (
                "name = \"x\"\nhttp = \"ftp://a/\"",
                "must start with http://",
            ),
            (
                "name = \"x\"\ncommand = \"true\"\nstatus = 200",
                "has no `http`",
            ),
            (
                "name = \"x\"\ncommand = \"true\"\ninterval = \"soon\"",
                "interval",
            ),
            (
                "name = \"x\"\ncommand = \"true\"\ninterval = \"1ms\"",
                "too short",
            ),
            (
                "name = \"x\"\ncommand = \"true\"\ninterval = \"1s\"\ntimeout = \"2s\"",
                "at most the interval",
            ),
            ("name = \"x\"\ncommand = \"true\"\nrise = 0", "rise = 0"),
            (
                "name = \"x\"\ncommand = \"true\"\nnotify = \"../x\"",
                "notify: event name",
            ),
            (
                "name = \"x\"\ncommand = \"true\"\ncolour = 1",
                "unknown field `colour`",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let long = "n".repeat(MAX_NAME + 1);
        assert!(
            parse(&format!("name = \"{long}\"\ncommand = \"true\""))
                .unwrap_err()
                .contains("limit is 57")
        );
    }

    #[test]
    fn names_are_unique() {
        let a = parse("name = \"a\"\ncommand = \"true\"").unwrap();
        assert!(
            check_unique(&[a.clone(), a])
                .unwrap_err()
                .contains("two checks are named \"a\"")
        );
    }
}
