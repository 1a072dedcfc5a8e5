//! Agent configuration: `rumor agent` flags, `RUMOR_*` environment variables and the TOML file.
//!
//! Every setting can come from four places; the first one that gives it wins:
//! 1. a command-line flag (`--bind 10.0.0.5:7946`),
//! 2. an environment variable (`RUMOR_BIND=10.0.0.5:7946`; lists are comma-separated),
//! 3. the TOML file named by `--config` / `RUMOR_CONFIG` (`bind = "10.0.0.5:7946"`),
//! 4. the built-in default.
//!
//! Flags and environment variables are both read by clap into [`AgentArgs`] (`args.rs`; clap
//! itself gives the flag priority over the variable). The file's keys are `file.rs`.
//! [`AgentArgs::resolve`] (`resolve.rs`) merges them with the file and the defaults into an
//! [`AgentConfig`], every setting through one helper that applies the precedence and says
//! where a bad value came from; `validate.rs` holds the rules each value must follow. The
//! merge itself ([`AgentArgs::resolve_with`]) takes the file and the host-dependent defaults
//! (`host.rs`) as explicit inputs so that it can be tested without touching the process
//! environment.
//!
//! Lists (`join`, `retry_join`) given by a flag or variable replace the file's list; tags are
//! merged key by key, a flag or variable winning over the file's `[tags]` table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use rumor_handlers::HandlerConfig;

use crate::cluster::Profile;
use crate::control::TokenSource;
use crate::plugin::signature::PublicKey;

mod args;
mod checks;
mod docker;
mod file;
mod handlers;
mod host;
mod resolve;
pub mod serf;
mod validate;
mod wasm_table;

pub use args::AgentArgs;
pub use file::ConfigFile;
pub(crate) use handlers::{HandlerTable, TableContext};
pub use host::{HostDefaults, default_data_dir, hostname};
pub use resolve::reload_file;
pub use validate::{parse_addr, parse_duration, parse_tag, validate_node_name};

/// The largest `max_event_bytes` a node may be configured with: fixed by the cluster's wire
/// budget (an event must fit one UDP packet; foca never sends oversize broadcasts).
pub use crate::cluster::message::MAX_EVENT_BYTES_CEILING;
/// The largest `max_response_bytes` (a query answer must fit one UDP packet).
pub use crate::cluster::query::MAX_RESPONSE_BYTES_CEILING;

/// Default port for gossip (UDP) and push-pull (TCP), as Serf's.
pub const DEFAULT_PORT: u16 = 7946;

/// Default `max_event_bytes`: name + payload of one user event.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024;
/// Default `max_response_bytes`: one query answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024;

/// Default `reconnect_timeout` and `tombstone_timeout`.
pub const DEFAULT_REAP_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Default `priority_boost`: nice levels the agent's threads run above its handlers.
pub const DEFAULT_PRIORITY_BOOST: u8 = 5;
/// The largest `priority_boost` (nice values span -20..=19).
pub const PRIORITY_BOOST_CEILING: u8 = 19;
/// Default `realtime_priority`: the lowest real-time priority, above every normal task and
/// below every real-time one the kernel runs.
pub const DEFAULT_REALTIME_PRIORITY: u8 = 1;
/// The largest `realtime_priority` (Linux's `SCHED_RR` priorities span 1..=99).
pub const REALTIME_PRIORITY_CEILING: u8 = 99;

/// Default log level.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// Default `max_control_connections`.
pub use crate::control::DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONTROL_CONNECTIONS;
/// The largest `max_control_connections`.
pub const MAX_CONTROL_CONNECTIONS_CEILING: usize = 65536;

/// The resolved configuration of one agent: every setting has its final value.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub node: String,
    pub bind: SocketAddr,
    pub advertise: Option<SocketAddr>,
    pub join: Vec<String>,
    pub retry_join: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    /// A Unix socket path or `host:port`; checked by the control server.
    pub control: String,
    /// Where the control token comes from (TCP control requires one).
    pub control_token: Option<TokenSource>,
    /// A separate listener for `GET /metrics` alone.
    pub metrics: Option<SocketAddr>,
    /// The DNS interface (`--dns` and the `dns_*` keys); `None`: off.
    pub dns: Option<crate::dns::DnsConfig>,
    pub profile: Profile,
    pub log_level: String,
    pub log_json: bool,
    pub dev: bool,
    pub max_event_bytes: usize,
    pub max_response_bytes: usize,
    pub reconnect_timeout: Duration,
    pub tombstone_timeout: Duration,
    /// Nice levels the gossip thread runs above the agent's other threads and handlers (0: none).
    pub priority_boost: u8,
    /// `SCHED_RR` priority of the gossip thread (0: none).
    pub realtime_priority: u8,
    /// Handlers from `--event-handler` flags, then the file's `[[handler]]` tables.
    pub handlers: Vec<HandlerConfig>,
    /// Checks from `--check` flags, then the file's `[[check]]` tables.
    pub checks: Vec<crate::health::CheckConfig>,
    /// The `--encrypt` key, checked to be a valid key.
    pub encrypt: Option<String>,
    /// Where the keyring lives; `None`: `keyring.json` in the data directory.
    pub keyring_file: Option<PathBuf>,
    /// Where the node's tags are kept (then `tags` is empty): read at start, rewritten on
    /// every change.
    pub tags_file: Option<PathBuf>,
    pub rejoin_after_leave: bool,
    /// User events kept for members that missed them.
    pub event_retention: crate::cluster::node::events::Retention,
    /// How strictly encryption is applied (both true but while a cluster moves to it).
    pub encrypt_verify_incoming: bool,
    pub encrypt_verify_outgoing: bool,
    /// Connections each control API listener keeps at most.
    pub max_control_connections: usize,
    /// Plugins must be signed by one of these keys (none: signatures are not checked).
    pub plugin_trusted_keys: Vec<PublicKey>,
    /// The file the configuration was read from, for SIGHUP reloads.
    pub config_file: Option<PathBuf>,
    /// See `--direct-push-limit` (hidden, for tests).
    pub direct_push_limit: usize,
}

impl AgentConfig {
    /// The settings, by config key, on which `fresh` (the configuration read again) differs
    /// from this one (the running configuration) but which a reload does not apply: they need
    /// a restart. Tags, the log level and the handlers are reloadable and never listed.
    pub fn restart_needed(&self, fresh: &AgentConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        macro_rules! compare {
            ($($key:ident),* $(,)?) => {
                $(if self.$key != fresh.$key {
                    keys.push(stringify!($key));
                })*
            };
        }
        compare!(
            node,
            bind,
            advertise,
            join,
            retry_join,
            data_dir,
            control,
            control_token,
            metrics,
            dns,
            profile,
            log_json,
            dev,
            max_event_bytes,
            max_response_bytes,
            reconnect_timeout,
            tombstone_timeout,
            priority_boost,
            realtime_priority,
            rejoin_after_leave,
            event_retention,
            keyring_file,
            max_control_connections,
        );
        keys
    }
}

/// The parts of the configuration a running agent applies on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reloadable {
    pub tags: BTreeMap<String, String>,
    /// `None`: not set (by the file, for [`reload_file`]).
    pub log_level: Option<String>,
    /// The handlers (for [`reload_file`]: the file's `[[handler]]` tables only).
    pub handlers: Vec<HandlerConfig>,
    /// The checks (for [`reload_file`]: the file's `[[check]]` tables only).
    pub checks: Vec<crate::health::CheckConfig>,
    /// Encryption: the key (to turn it on in a running agent) and how strictly it applies.
    pub encrypt: Option<String>,
    pub encrypt_verify_incoming: bool,
    pub encrypt_verify_outgoing: bool,
    /// The keys plugins must be signed with.
    pub plugin_trusted_keys: Vec<PublicKey>,
}

/// Why the configuration could not be read or is invalid. Every message names the input.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "config file {} not found: create it, or point --config / RUMOR_CONFIG at an existing file",
        path.display()
    )]
    FileNotFound { path: PathBuf },

    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A TOML syntax error, an unknown key or a value of the wrong type.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A value that breaks a rule, e.g. a node name with a space in it.
    #[error("invalid {setting} {value:?}: {rule}")]
    Invalid {
        setting: &'static str,
        value: String,
        rule: String,
    },

    /// An invalid value given by config key `key`'s flag or environment variable (clap does
    /// not say which of the two, so the message names both).
    ///
    /// The inner error is part of the message, not a `source()` (its field is not named
    /// `source`): a `{:#}` chain would print it twice.
    #[error("{}: {error}", given_by(key))]
    Given {
        key: &'static str,
        error: Box<ConfigError>,
    },

    /// An invalid value that came from the config file, with where it is.
    #[error("{}:{line}:{column}: {error}", path.display())]
    InFile {
        path: PathBuf,
        line: usize,
        column: usize,
        error: Box<ConfigError>,
    },

    #[error("cannot determine the host name to use as node name ({0}): pass --node NAME")]
    NoHostname(String),

    /// A handler that cannot run as written (a filter typo, an empty command, ...).
    #[error("invalid event handler: {0}")]
    Handler(String),

    /// A `[[check]]` that cannot run as written.
    #[error("invalid [[check]]: {0}")]
    Check(String),
}

impl ConfigError {
    fn invalid(setting: &'static str, value: &str, rule: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting,
            value: value.to_owned(),
            rule: rule.into(),
        }
    }

    /// `err` about the value config key `key`'s flag or variable gave.
    fn given(key: &'static str, err: ConfigError) -> Self {
        ConfigError::Given {
            key,
            error: Box::new(err),
        }
    }
}

/// `--bind or RUMOR_BIND` for `bind`.
fn given_by(key: &str) -> String {
    let (flag, variable) = args::flag_and_variable(key);
    format!("{flag} or {variable}")
}

#[cfg(test)]
mod tests;
