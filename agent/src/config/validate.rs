//! The rules each setting's value must follow. Every check takes the raw value from whichever
//! source gave it and returns it parsed, or a [`ConfigError::Invalid`] naming the setting, the
//! value and the rule.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::ConfigError;
use crate::cluster::message::{check_node_name, check_tag_key, check_tag_value};
use crate::plugin::signature::PublicKey;

/// Checks a node name: 1-64 bytes of `[A-Za-z0-9._-]`. Returns it unchanged.
pub fn validate_node_name(name: &str) -> Result<&str, ConfigError> {
    const RULE: &str = "a node name is 1-64 bytes of letters, digits, '.', '_' and '-'";
    check_node_name(name).map_err(|_| ConfigError::invalid("node", name, RULE))?;
    Ok(name)
}

const TAG_KEY_RULE: &str = "a tag key is 1-64 bytes of letters, digits, '.', '_' and '-'";

pub(super) fn validate_tag_key(key: &str) -> Result<(), ConfigError> {
    check_tag_key(key).map_err(|_| ConfigError::invalid("tag key", key, TAG_KEY_RULE))
}

/// Parses `KEY=VALUE` (split at the first `=`; the value may be empty and contain `=`).
pub fn parse_tag(s: &str) -> Result<(String, String), ConfigError> {
    let Some((k, v)) = s.split_once('=') else {
        return Err(ConfigError::invalid(
            "tag",
            s,
            "expected KEY=VALUE, e.g. role=web",
        ));
    };
    if validate_tag_key(k).is_err() {
        return Err(ConfigError::invalid(
            "tag",
            s,
            format!("expected KEY=VALUE where {TAG_KEY_RULE}"),
        ));
    }
    validate_tag_value(k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Checks a tag value: text without control characters or `,` (see [`check_tag_value`]).
pub(super) fn validate_tag_value(key: &str, value: &str) -> Result<(), ConfigError> {
    check_tag_value(key, value).map_err(|rule| ConfigError::invalid("tag value", value, rule))
}

/// Parses `IP:PORT`, `[IPv6]:PORT` or a bare IP (which gets `default_port`).
pub fn parse_addr(
    setting: &'static str,
    s: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(ConfigError::invalid(
        setting,
        s,
        format!(
            "expected IP:PORT or a bare IP (port {default_port}), e.g. 10.0.0.5:7946 or [::1]:7946"
        ),
    ))
}

/// Parses the `metrics` listener: `IP:PORT`, with no default port.
pub(super) fn parse_metrics(s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim()
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError::invalid("metrics", s, "expected IP:PORT, e.g. 127.0.0.1:9946"))
}

pub(super) fn parse_dns(s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim()
        .parse::<SocketAddr>()
        .map_err(|_| ConfigError::invalid("dns", s, "expected IP:PORT, e.g. 127.0.0.1:8600"))
}

/// A DNS domain: one or more labels (a trailing dot is allowed), kept as written.
pub(super) fn validate_dns_domain(s: &str) -> Result<String, ConfigError> {
    crate::dns::parse_domain(s)
        .map(|_| s.trim_end_matches('.').to_ascii_lowercase())
        .map_err(|e| ConfigError::invalid("dns_domain", s, format!("{e:#}")))
}

/// Parses a duration such as `30s`, `10m`, `24h` or `1h 30m`.
pub fn parse_duration(setting: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        ConfigError::invalid(
            setting,
            s,
            format!("expected a duration such as 30s, 10m or 24h ({e})"),
        )
    })
}

/// The control endpoint is checked by the control server; here only that there is one.
pub(super) fn validate_control(control: &str) -> Result<String, ConfigError> {
    if control.is_empty() {
        return Err(ConfigError::invalid(
            "control",
            control,
            "expected a Unix socket path or IP:PORT",
        ));
    }
    Ok(control.to_owned())
}

/// The level itself is parsed by the logging setup; here only that there is one.
pub(super) fn validate_log_level(level: &str) -> Result<String, ConfigError> {
    if level.trim().is_empty() {
        return Err(ConfigError::invalid(
            "log_level",
            level,
            "expected trace, debug, info, warn, error or a tracing filter",
        ));
    }
    Ok(level.to_owned())
}

/// Checks an encryption key's form (never echoing the key itself in the error).
pub(super) fn validate_key(key: &str) -> Result<String, ConfigError> {
    crate::cluster::keyring::Key::parse(key)
        .map_err(|e| ConfigError::invalid("encrypt", "(hidden)", e.to_string()))?;
    Ok(key.trim().to_string())
}

/// A size limit must leave every message inside one UDP packet.
pub(super) fn validate_limit(
    setting: &'static str,
    n: usize,
    ceiling: usize,
) -> Result<usize, ConfigError> {
    validate_count(setting, n, ceiling, ": it must fit in one UDP packet")
}

/// A count of connections, `1..=ceiling`.
pub(super) fn validate_connections(
    setting: &'static str,
    n: usize,
    ceiling: usize,
) -> Result<usize, ConfigError> {
    validate_count(setting, n, ceiling, "")
}

/// `1..=ceiling`; `why` follows the range in the error.
fn validate_count(
    setting: &'static str,
    n: usize,
    ceiling: usize,
    why: &str,
) -> Result<usize, ConfigError> {
    if n == 0 || n > ceiling {
        return Err(ConfigError::invalid(
            setting,
            &n.to_string(),
            format!("must be between 1 and {ceiling}{why}"),
        ));
    }
    Ok(n)
}

/// A `0 (off)..=ceiling` setting; `unit` follows the ceiling in the error.
pub(super) fn validate_level(
    setting: &'static str,
    n: u8,
    ceiling: u8,
    unit: &str,
) -> Result<u8, ConfigError> {
    if n > ceiling {
        return Err(ConfigError::invalid(
            setting,
            &n.to_string(),
            format!("must be between 0 (off) and {ceiling}{unit}"),
        ));
    }
    Ok(n)
}

/// Parses the trusted plugin keys.
pub(super) fn parse_trusted_keys(keys: &[String]) -> Result<Vec<PublicKey>, ConfigError> {
    keys.iter()
        .map(|k| {
            PublicKey::parse(k).map_err(|rule| ConfigError::invalid("plugin_trusted_keys", k, rule))
        })
        .collect()
}
