//! Serf's merged configuration as `rumor.toml` text: each key rumor has an equivalent for
//! becomes that key (checked with rumor's own rules, so the file starts an agent), and every
//! other key Serf was given is kept as a comment that says why rumor does without it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rumor_handlers::{FilterItem, HandlerSpec};

use super::super::validate::{parse_addr, validate_node_name, validate_tag_key};
use super::SerfImportError;
use super::go_duration::format_duration;
use super::read::{SerfConfig, Sourced};
use crate::cluster::keyring::{Key, Keyring};
use crate::config::{DEFAULT_PORT, MAX_EVENT_BYTES_CEILING, MAX_RESPONSE_BYTES_CEILING};

/// Serf's default `rpc_addr`, used when a config gives `rpc_auth` alone.
const SERF_RPC_ADDR: &str = "127.0.0.1:7373";
/// Serf's defaults for its two payload limits (rumor has one, `max_event_bytes`, for both).
const SERF_USER_EVENT_LIMIT: i64 = 512;
const SERF_QUERY_LIMIT: i64 = 1024;

/// Why each Serf key rumor has no setting for is left out, as the comment says it.
const WITHOUT_EQUIVALENT: &[(&str, &str)] = &[
    (
        "protocol",
        "rumor speaks its own wire protocol; Serf and rumor agents do not form one cluster, so move every node",
    ),
    (
        "replay_on_join",
        "rumor never replays past user events to a joining node",
    ),
    (
        "snapshot_path",
        "rumor always keeps its snapshot (and control socket, keyring and handler record) in data_dir",
    ),
    (
        "leave_on_terminate",
        "rumor leaves gracefully on SIGTERM and SIGINT alike; SIGKILL stops it without leaving",
    ),
    (
        "skip_leave_on_interrupt",
        "rumor leaves gracefully on SIGTERM and SIGINT alike; SIGKILL stops it without leaving",
    ),
    (
        "discover",
        "rumor has no mDNS discovery: list members in join or retry_join",
    ),
    (
        "mdns",
        "rumor has no mDNS discovery: list members in join or retry_join",
    ),
    (
        "interface",
        "rumor binds an address, not an interface: set bind to the interface's IP",
    ),
    (
        "reconnect_interval",
        "rumor retries failed members at the interval of its timing profile",
    ),
    (
        "disable_name_resolution",
        "rumor never shuts a node down over a name conflict: it keeps the node it knew and reports the other (rumor info, the log)",
    ),
    (
        "enable_syslog",
        "rumor logs to stderr (journald under systemd); log_json = true for JSON lines",
    ),
    (
        "syslog_facility",
        "rumor logs to stderr (journald under systemd); log_json = true for JSON lines",
    ),
    (
        "retry_max_attempts",
        "rumor keeps retrying retry_join with backoff until it joins",
    ),
    (
        "retry_interval",
        "rumor retries retry_join with a growing backoff instead of a fixed interval",
    ),
    ("enable_compression", "rumor does not compress gossip"),
    (
        "statsite_addr",
        "rumor serves Prometheus metrics instead: GET /metrics on the control API, or set metrics = \"IP:PORT\"",
    ),
    (
        "statsd_addr",
        "rumor serves Prometheus metrics instead: GET /metrics on the control API, or set metrics = \"IP:PORT\"",
    ),
    (
        "broadcast_timeout",
        "rumor spreads events on its broadcast tree with no timeout to set",
    ),
    (
        "validate_node_names",
        "rumor always checks node names (1-64 bytes of letters, digits, '.', '_' and '-')",
    ),
    (
        "disable_coordinates",
        "rumor keeps no network coordinates (serf rtt has no rumor equivalent)",
    ),
    ("msgpackusenewtimeformat", "rumor does not use msgpack"),
];

/// The rumor.toml text for `config`.
pub(super) fn translate(config: &SerfConfig) -> Result<String, SerfImportError> {
    let mut out = Toml::default();
    out.header(&config.files);

    if let Some(node) = config.text("node_name") {
        validate_node_name(&node.value).map_err(|e| invalid(node, "node_name", e))?;
        out.key("node", quote(&node.value), None);
    }
    if let Some(bind) = config.text("bind") {
        let addr =
            parse_addr("bind", &bind.value, DEFAULT_PORT).map_err(|e| invalid(bind, "bind", e))?;
        out.key("bind", quote(&addr.to_string()), None);
    }
    if let Some(advertise) = config.text("advertise") {
        // Serf gives a bare advertised IP its default port, not the bind port.
        let addr = parse_addr("advertise", &advertise.value, DEFAULT_PORT)
            .map_err(|e| invalid(advertise, "advertise", e))?;
        out.key("advertise", quote(&addr.to_string()), None);
    }
    let joins = config.list("start_join");
    if !joins.is_empty() {
        out.key("join", list(joins), None);
    }
    let retry = config.list("retry_join");
    if !retry.is_empty() {
        out.key("retry_join", list(retry), None);
    }
    if config.flag("rejoin_after_leave").is_some_and(|f| f.value) {
        out.key("rejoin_after_leave", "true".into(), None);
    }
    encryption(config, &mut out)?;
    if let Some(level) = config.text("log_level") {
        out.key("log_level", quote(log_level(level)?), None);
    }
    if let Some(profile) = config.text("profile") {
        match profile.value.as_str() {
            "lan" | "wan" | "local" => out.key("profile", quote(&profile.value), None),
            _ => {
                return Err(invalid_text(
                    profile,
                    "profile",
                    "Serf's profiles are lan, wan and local",
                ));
            }
        }
    }
    for key in ["reconnect_timeout", "tombstone_timeout"] {
        if let Some(timeout) = config.duration(key) {
            out.key(key, quote(&format_duration(timeout.value.1)), None);
        }
    }
    limits(config, &mut out);
    control(config, &mut out)?;
    tags(config, &mut out)?;
    handlers(config, &mut out)?;
    for (key, file) in config.set_keys() {
        if let Some((_, reason)) = WITHOUT_EQUIVALENT.iter().find(|(k, _)| *k == key) {
            out.without_equivalent(key, shown_value(config, key), file, reason);
        }
    }
    Ok(out.finish())
}

/// `encrypt_key` or `keyring_file` (Serf refuses both at once), checked to hold valid keys.
fn encryption(config: &SerfConfig, out: &mut Toml) -> Result<(), SerfImportError> {
    match (config.text("encrypt_key"), config.text("keyring_file")) {
        (Some(_), Some(ring)) => Err(invalid_text(
            ring,
            "keyring_file",
            "encrypt_key is set too, which Serf refuses (\"Encryption key not allowed while using a keyring\"): keep one of them",
        )),
        (Some(key), None) => {
            Key::parse(&key.value).map_err(|e| invalid_text(key, "encrypt_key", &e.to_string()))?;
            out.key("encrypt", quote(key.value.trim()), None);
            Ok(())
        }
        (None, Some(ring)) => {
            let path = Path::new(&ring.value);
            let keys = Keyring::load(path)
                .map_err(|e| invalid_text(ring, "keyring_file", &e))?
                .keys()
                .count();
            let mut note = format!(
                "Serf's keyring file, used as it is: rumor reads its {keys} key(s) (the first is primary) and `rumor keys` keeps it up to date"
            );
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    note.push_str(&format!(
                        "; run `chmod 600 {}` first: rumor refuses a keyring other users can read",
                        path.display()
                    ));
                }
            }
            out.key("keyring_file", quote(&ring.value), Some(&note));
            Ok(())
        }
        (None, None) => Ok(()),
    }
}

/// Serf's log levels (any case) as rumor's.
fn log_level(level: &Sourced<String>) -> Result<&'static str, SerfImportError> {
    Ok(match level.value.to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERR" | "ERROR" => "error",
        _ => {
            return Err(invalid_text(
                level,
                "log_level",
                "Serf's log levels are TRACE, DEBUG, INFO, WARN and ERR",
            ));
        }
    })
}

/// Serf's payload limits: `user_event_size_limit` and `query_size_limit` become rumor's one
/// `max_event_bytes` (the larger, so nothing Serf let through is refused),
/// `query_response_size_limit` becomes `max_response_bytes`; both within what one packet holds.
fn limits(config: &SerfConfig, out: &mut Toml) {
    let user = config.number("user_event_size_limit");
    let query = config.number("query_size_limit");
    if user.is_some() || query.is_some() {
        let wanted = user
            .map_or(SERF_USER_EVENT_LIMIT, |n| n.value)
            .max(query.map_or(SERF_QUERY_LIMIT, |n| n.value));
        let (n, note) = within(wanted, MAX_EVENT_BYTES_CEILING);
        let note = note.unwrap_or_else(|| {
            "Serf's user_event_size_limit and query_size_limit: rumor has one limit for both"
                .to_string()
        });
        out.key("max_event_bytes", n.to_string(), Some(&note));
    }
    if let Some(limit) = config.number("query_response_size_limit") {
        let (n, note) = within(limit.value, MAX_RESPONSE_BYTES_CEILING);
        out.key("max_response_bytes", n.to_string(), note.as_deref());
    }
}

/// `n` cut to `1..=ceiling`, with a note when it was cut.
fn within(n: i64, ceiling: usize) -> (usize, Option<String>) {
    match usize::try_from(n) {
        Ok(n) if (1..=ceiling).contains(&n) => (n, None),
        _ => (
            ceiling.min(usize::try_from(n).unwrap_or(1).max(1)),
            Some(format!(
                "Serf's {n} is outside 1..={ceiling}: a message must fit one UDP packet in rumor"
            )),
        ),
    }
}

/// `rpc_addr` and `rpc_auth`: rumor serves TCP control only with a token, so an address alone
/// stays a comment and the agent keeps its Unix socket (which the `serf` command finds).
fn control(config: &SerfConfig, out: &mut Toml) -> Result<(), SerfImportError> {
    let addr = config.text("rpc_addr");
    match (addr, config.text("rpc_auth")) {
        (addr, Some(auth)) => {
            let endpoint = addr.map_or(SERF_RPC_ADDR, |a| a.value.as_str());
            if endpoint.parse::<std::net::SocketAddr>().is_err() {
                let addr = addr.expect("the default parses");
                return Err(invalid_text(
                    addr,
                    "rpc_addr",
                    "expected IP:PORT, e.g. 127.0.0.1:7373",
                ));
            }
            out.key(
                "control",
                quote(endpoint),
                Some("Serf's rpc_addr: `serf -rpc-addr` and `rumor --control` take it"),
            );
            out.key(
                "control_token",
                quote(&auth.value),
                Some("Serf's rpc_auth: `serf -rpc-auth` and `rumor --control-token` take it"),
            );
        }
        (Some(addr), None) => out.without_equivalent(
            "rpc_addr",
            quote(&addr.value),
            &addr.file,
            "rumor serves TCP control only with a token (Serf's rpc_auth, rumor's control_token); without one the agent listens on control.sock in its data directory, where `serf` and `rumor` commands find it",
        ),
        (None, None) => {}
    }
    Ok(())
}

/// `tags`, `role` (Serf's older name for the `role` tag, which wins over `tags.role`) and
/// `tags_file` (which Serf refuses together with tags or a role).
fn tags(config: &SerfConfig, out: &mut Toml) -> Result<(), SerfImportError> {
    let role = config.text("role");
    if let Some(file) = config.text("tags_file") {
        if let Some(given) = role.or_else(|| config.tags.values().next()) {
            return Err(invalid_text(
                given,
                if role.is_some() { "role" } else { "tags" },
                &format!(
                    "tags_file {:?} is set too, which Serf refuses (\"Tags config not allowed while using tag files\"): keep the tags in one place",
                    file.value
                ),
            ));
        }
        let path = Path::new(&file.value);
        if path.exists() {
            let tags =
                crate::tags_file::load(path).map_err(|e| invalid_text(file, "tags_file", &e))?;
            for key in tags.keys() {
                validate_tag_key(key).map_err(|e| invalid(file, "tags_file", e))?;
            }
        }
        out.key(
            "tags_file",
            quote(&file.value),
            Some("Serf's tags file, used as it is: the agent's tags come from it and `rumor tags` writes changes back"),
        );
        return Ok(());
    }
    let mut tags: Vec<(&str, &Sourced<String>)> =
        config.tags.iter().map(|(k, v)| (k.as_str(), v)).collect();
    if let Some(role) = role {
        tags.retain(|(k, _)| *k != "role");
        tags.push(("role", role));
        tags.sort_by_key(|(k, _)| *k);
    }
    if tags.is_empty() {
        return Ok(());
    }
    out.table("[tags]");
    for (key, value) in tags {
        validate_tag_key(key).map_err(|e| invalid(value, "tags", e))?;
        out.table_line(format!("{} = {}", bare_or_quoted(key), quote(&value.value)));
    }
    Ok(())
}

/// `event_handlers`: each `[FILTER=]SCRIPT` becomes a `[[handler]]`, with Serf's coalescing
/// for the events Serf coalesces.
fn handlers(config: &SerfConfig, out: &mut Toml) -> Result<(), SerfImportError> {
    let handlers = config.list("event_handlers");
    if handlers.is_empty() {
        return Ok(());
    }
    out.comment_block(&[
        "Serf's event_handlers. Serf coalesces member events and user events (one run at most",
        "3s after the first, sooner once none came for 1s): coalesce = \"serf\" keeps that timing;",
        "remove it to run every event as it arrives, rumor's default. Serf runs its handlers one",
        "at a time: serial_group = \"serf\" keeps them taking turns; remove it to let them run",
        "side by side. Serf never stops a handler; rumor stops a run after its timeout (60s",
        "unless `timeout` says otherwise).",
    ]);
    for (i, handler) in handlers.iter().enumerate() {
        let spec =
            HandlerSpec::parse_cli(&handler.value).map_err(|e| SerfImportError::Invalid {
                path: handler.file.clone(),
                key: "event_handlers".into(),
                message: e.to_string(),
            })?;
        let events: Vec<String> = spec.filter.items().iter().map(|i| i.to_string()).collect();
        let only_queries = spec
            .filter
            .items()
            .iter()
            .all(|item| matches!(item, FilterItem::Query(_)));
        out.table("[[handler]]");
        out.table_line(format!("name = \"serf-{}\"", i + 1));
        out.table_line(format!(
            "events = [{}]",
            events
                .iter()
                .map(|e| quote(e))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.table_line(format!("command = {}", quote(&spec.command)));
        if !only_queries {
            out.table_line("coalesce = \"serf\"".to_string());
        }
        out.table_line("serial_group = \"serf\"".to_string());
    }
    Ok(())
}

/// How a key Serf was given is shown in its comment.
fn shown_value(config: &SerfConfig, key: &str) -> String {
    if let Some(text) = config.text(key) {
        return quote(&text.value);
    }
    if let Some(duration) = config.duration(key) {
        return quote(&duration.value.0);
    }
    if let Some(n) = config.number(key) {
        return n.value.to_string();
    }
    if let Some(flag) = config.flag(key) {
        return flag.value.to_string();
    }
    if key == "mdns" {
        let mut parts = Vec::new();
        if let Some(iface) = config.text("mdns.interface") {
            parts.push(format!("interface = {}", quote(&iface.value)));
        }
        for flag in ["disable_ipv4", "disable_ipv6"] {
            if config.flag(&format!("mdns.{flag}")).is_some() {
                parts.push(format!("{flag} = true"));
            }
        }
        return format!("{{ {} }}", parts.join(", "));
    }
    String::new()
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// A TOML key: bare when it can be (tag keys are letters, digits, `.`, `_` and `-`; a dot
/// would make it a dotted key, so those are quoted).
fn bare_or_quoted(key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        quote(key)
    }
}

fn list(items: &[Sourced<String>]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(&i.value)).collect();
    format!("[{}]", quoted.join(", "))
}

fn invalid(at: &Sourced<String>, key: &str, e: crate::config::ConfigError) -> SerfImportError {
    invalid_text(at, key, &e.to_string())
}

fn invalid_text(at: &Sourced<String>, key: &str, message: &str) -> SerfImportError {
    SerfImportError::Invalid {
        path: at.file.clone(),
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

/// The text being built: top-level keys first (TOML wants them before any table), then the
/// tables, then the keys without an equivalent.
#[derive(Default)]
struct Toml {
    head: String,
    keys: String,
    tables: String,
    without: String,
}

impl Toml {
    fn header(&mut self, files: &[PathBuf]) {
        self.head.push_str(
            "# rumor.toml, imported from Serf's configuration by `rumor config import-serf`.\n",
        );
        self.head.push_str("# Merged from, in this order:\n");
        for file in files {
            let _ = writeln!(self.head, "#   {}", file.display());
        }
    }

    fn key(&mut self, key: &str, value: String, note: Option<&str>) {
        if let Some(note) = note {
            let _ = writeln!(self.keys, "# {note}");
        }
        let _ = writeln!(self.keys, "{key} = {value}");
    }

    fn table(&mut self, header: &str) {
        let _ = writeln!(self.tables, "\n{header}");
    }

    fn table_line(&mut self, line: String) {
        let _ = writeln!(self.tables, "{line}");
    }

    fn comment_block(&mut self, lines: &[&str]) {
        self.tables.push('\n');
        for line in lines {
            let _ = writeln!(self.tables, "# {line}");
        }
    }

    fn without_equivalent(&mut self, key: &str, value: String, file: &Path, reason: &str) {
        let _ = writeln!(
            self.without,
            "# {key} = {value}   (from {})\n#   not imported: {reason}",
            file.display()
        );
    }

    fn finish(self) -> String {
        let mut text = self.head;
        if !self.keys.is_empty() {
            text.push('\n');
            text.push_str(&self.keys);
        }
        text.push_str(&self.tables);
        if !self.without.is_empty() {
            text.push_str(
                "\n# Serf settings rumor has no equivalent for (kept here, not applied):\n",
            );
            text.push_str(&self.without);
        }
        text
    }
}
