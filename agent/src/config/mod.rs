//! Agent configuration: `rumor agent` flags, `RUMOR_*` environment variables and the TOML file.
//!
//! Every setting can come from four places; the first one that gives it wins:
//! 1. a command-line flag (`--bind 10.0.0.5:7946`),
//! 2. an environment variable (`RUMOR_BIND=10.0.0.5:7946`; lists are comma-separated),
//! 3. the TOML file named by `--config` / `RUMOR_CONFIG` (`bind = "10.0.0.5:7946"`),
//! 4. the built-in default.
//!
//! Flags and environment variables are both read by clap into [`AgentArgs`] (clap itself gives the
//! flag priority over the variable). [`AgentArgs::resolve`] then merges them with the file and the
//! defaults into an [`AgentConfig`]. The merge itself ([`AgentArgs::resolve_with`]) takes the file
//! and the host-dependent defaults as explicit inputs so that it can be tested without touching
//! the process environment.
//!
//! Lists (`join`, `retry_join`) given by a flag or variable replace the file's list; tags are
//! merged key by key, a flag or variable winning over the file's `[tags]` table.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use rumor_handlers::HandlerConfig;

use crate::cluster::Profile;
use crate::control::TokenSource;

mod handlers;

/// The largest `max_event_bytes` a node may be configured with: fixed by the cluster's wire
/// budget (an event must fit one UDP packet; foca never sends oversize broadcasts).
pub use crate::cluster::message::MAX_EVENT_BYTES_CEILING;
use crate::cluster::message::{check_node_name, check_tag_key};
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

/// Flags of `rumor agent`. Each also reads an `RUMOR_*` environment variable; `None` (or an
/// absent list) means "given neither as a flag nor in the environment".
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// Configuration file (TOML); every key is optional and overridden by flags and RUMOR_* variables.
    #[arg(long, env = "RUMOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Node name, unique in the cluster: 1-64 bytes of [A-Za-z0-9._-] [default: the host name].
    #[arg(long, env = "RUMOR_NODE", value_name = "NAME")]
    pub node: Option<String>,

    /// Address for gossip (UDP) and push-pull (TCP) on the same port; a bare IP means port 7946
    /// [default: 0.0.0.0:7946, or 127.0.0.1:7946 with --dev].
    #[arg(long, env = "RUMOR_BIND", value_name = "IP:PORT")]
    pub bind: Option<String>,

    /// Address other members should use to reach this node (behind NAT or in a container);
    /// a bare IP means the bind port [default: derived from --bind].
    #[arg(long, env = "RUMOR_ADVERTISE", value_name = "IP:PORT")]
    pub advertise: Option<String>,

    /// Join the cluster through this member at start (repeatable); start fails if none answers.
    #[arg(long, env = "RUMOR_JOIN", value_name = "ADDR", value_delimiter = ',')]
    pub join: Option<Vec<String>>,

    /// Like --join, but retried with backoff in the background and never fatal (repeatable).
    #[arg(
        long,
        env = "RUMOR_RETRY_JOIN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub retry_join: Option<Vec<String>>,

    /// A tag of this node, KEY=VALUE (repeatable; RUMOR_TAGS takes k=v,k=v).
    #[arg(
        long = "tag",
        env = "RUMOR_TAGS",
        value_name = "K=V",
        value_delimiter = ','
    )]
    pub tags: Option<Vec<String>>,

    /// Directory for the control socket, snapshots and plugins
    /// [default: /var/lib/rumor as root, else $XDG_STATE_HOME/rumor or ~/.local/state/rumor].
    #[arg(long, env = "RUMOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Control API endpoint: a Unix socket path or IP:PORT (TCP requires --control-token)
    /// [default: <data-dir>/control.sock].
    #[arg(long, env = "RUMOR_CONTROL", value_name = "ENDPOINT")]
    pub control: Option<String>,

    // Control API security and metrics (control_token, control_token_file, metrics).
    /// Token that TCP control requests must carry as `Authorization: Bearer TOKEN` (required
    /// for a TCP --control; a Unix socket needs none). Prefer --control-token-file.
    #[arg(
        long,
        env = "RUMOR_CONTROL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub control_token: Option<String>,

    /// Read the control token from this file; it must not be readable by group or others.
    #[arg(
        long,
        env = "RUMOR_CONTROL_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "control_token"
    )]
    pub control_token_file: Option<PathBuf>,

    /// Also serve GET /metrics (Prometheus text, no token: counters only) on this address,
    /// e.g. 127.0.0.1:9946 [default: only on the control API].
    #[arg(long, env = "RUMOR_METRICS", value_name = "IP:PORT")]
    pub metrics: Option<String>,
    // End of control API security and metrics.
    /// Timing profile [default: lan, or local with --dev].
    #[arg(long, env = "RUMOR_PROFILE", value_enum)]
    pub profile: Option<Profile>,

    /// Log level or tracing filter (trace, debug, info, warn, error) [default: info].
    #[arg(long, env = "RUMOR_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "RUMOR_LOG_JSON", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: Option<bool>,

    /// Single-node friendly defaults for trying rumor out: bind 127.0.0.1, profile local.
    #[arg(long, env = "RUMOR_DEV", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dev: Option<bool>,

    /// Limit on a user event's name + payload, in bytes (1..=1100) [default: 1024].
    #[arg(long, env = "RUMOR_MAX_EVENT_BYTES", value_name = "N")]
    pub max_event_bytes: Option<usize>,

    /// Limit on one query answer, in bytes (1..=1200); longer answers are cut with a marker
    /// [default: 1024].
    #[arg(long, env = "RUMOR_MAX_RESPONSE_BYTES", value_name = "N")]
    pub max_response_bytes: Option<usize>,

    /// Run the agent's gossip thread this many nice levels above its other threads and its
    /// handlers (0-19; 0 turns it off), for when real-time scheduling is not permitted. Needs
    /// root or CAP_SYS_NICE; without, the agent runs unboosted and says so [default: 5].
    #[arg(long, env = "RUMOR_PRIORITY_BOOST", value_name = "N")]
    pub priority_boost: Option<u8>,

    /// Run the agent's gossip thread under SCHED_RR at this real-time priority (1-99; 0 turns
    /// it off), so it gets a CPU ahead of every handler however busy the host is. Threads and
    /// processes it starts (handlers included) run as normal tasks. Needs root or
    /// CAP_SYS_NICE; without, the agent relies on --priority-boost and says so [default: 1].
    #[arg(long, env = "RUMOR_REALTIME_PRIORITY", value_name = "N")]
    pub realtime_priority: Option<u8>,

    /// Run COMMAND for events matching FILTER (repeatable). FILTER is Serf's: member-join,
    /// member-leave, member-failed, member-update, member-reap, user, user:NAME, query,
    /// query:NAME, or * — comma-separated; without `FILTER=` every event runs it. More
    /// settings (timeouts, tags, coalescing) with [[handler]] tables in the config file.
    #[arg(
        long = "event-handler",
        env = "RUMOR_EVENT_HANDLER",
        value_name = "[FILTER=]COMMAND"
    )]
    pub event_handler: Option<Vec<String>>,

    /// Encrypt all gossip with this base64 AES-256 key (make one with `rumor keygen`). Used
    /// on first start only: the keys then live in the keyring file in the data directory,
    /// managed with `rumor keys`.
    #[arg(
        long,
        env = "RUMOR_ENCRYPT",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub encrypt: Option<String>,

    /// On start, rejoin the members of the last run (from the snapshot in the data
    /// directory) even if this node left gracefully last time [default: false].
    #[arg(long, env = "RUMOR_REJOIN_AFTER_LEAVE", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rejoin_after_leave: Option<bool>,

    /// How long a failed member stays listed before it is reaped, e.g. 30m, 24h [default: 24h].
    #[arg(long, env = "RUMOR_RECONNECT_TIMEOUT", value_name = "DURATION")]
    pub reconnect_timeout: Option<String>,

    /// How long a member that left stays listed before it is reaped [default: 24h].
    #[arg(long, env = "RUMOR_TOMBSTONE_TIMEOUT", value_name = "DURATION")]
    pub tombstone_timeout: Option<String>,
}

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
    /// The `--encrypt` key, checked to be a valid key.
    pub encrypt: Option<String>,
    pub rejoin_after_leave: bool,
    /// The file the configuration was read from, for SIGHUP reloads.
    pub config_file: Option<PathBuf>,
}

/// The parts of the configuration a running agent applies on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reloadable {
    pub tags: BTreeMap<String, String>,
    /// `None`: not set (by the file, for [`reload_file`]).
    pub log_level: Option<String>,
    /// The handlers (for [`reload_file`]: the file's `[[handler]]` tables only).
    pub handlers: Vec<HandlerConfig>,
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

    /// An invalid value that came from the config file, with where it is.
    #[error("{}:{line}:{column}: {source}", path.display())]
    InFile {
        path: PathBuf,
        line: usize,
        column: usize,
        source: Box<ConfigError>,
    },

    #[error("cannot determine the host name to use as node name ({0}): pass --node NAME")]
    NoHostname(String),

    /// A handler that cannot run as written (a filter typo, an empty command, ...).
    #[error("invalid event handler: {0}")]
    Handler(String),
}

impl ConfigError {
    fn invalid(setting: &'static str, value: &str, rule: impl Into<String>) -> Self {
        ConfigError::Invalid {
            setting,
            value: value.to_owned(),
            rule: rule.into(),
        }
    }
}

/// The keys of the TOML file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileValues {
    node: Option<Spanned<String>>,
    bind: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    join: Option<Vec<String>>,
    retry_join: Option<Vec<String>>,
    tags: Option<Spanned<BTreeMap<String, String>>>,
    data_dir: Option<PathBuf>,
    control: Option<String>,
    control_token: Option<String>,
    control_token_file: Option<Spanned<PathBuf>>,
    metrics: Option<Spanned<String>>,
    profile: Option<Profile>,
    log_level: Option<String>,
    log_json: Option<bool>,
    dev: Option<bool>,
    max_event_bytes: Option<Spanned<usize>>,
    max_response_bytes: Option<Spanned<usize>>,
    reconnect_timeout: Option<Spanned<String>>,
    tombstone_timeout: Option<Spanned<String>>,
    priority_boost: Option<Spanned<u8>>,
    realtime_priority: Option<Spanned<u8>>,
    handler: Option<Vec<Spanned<handlers::HandlerTable>>>,
    encrypt: Option<Spanned<String>>,
    rejoin_after_leave: Option<bool>,
}

/// A parsed config file, with its text kept to turn byte offsets into line numbers.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    text: String,
    values: FileValues,
}

impl ConfigFile {
    /// Reads and parses `path`. Fails on a missing file, a syntax error or an unknown key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::FileNotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::ReadFile {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(path, text)
    }

    /// Parses `text` as if read from `path` (which only appears in error messages).
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        match toml::from_str::<FileValues>(&text) {
            Ok(values) => Ok(ConfigFile {
                path: path.to_owned(),
                text,
                values,
            }),
            Err(e) => {
                let (line, column) = line_column(&text, e.span().map_or(0, |s| s.start));
                Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    column,
                    message: e.message().trim_end().to_owned(),
                })
            }
        }
    }

    /// Attaches the file and line of `span` to an error about a value from this file.
    fn locate(&self, span: std::ops::Range<usize>, err: ConfigError) -> ConfigError {
        let (line, column) = line_column(&self.text, span.start);
        ConfigError::InFile {
            path: self.path.clone(),
            line,
            column,
            source: Box::new(err),
        }
    }

    /// Validates the file's `[tags]` table.
    fn tags(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(tags) = &self.values.tags else {
            return Ok(BTreeMap::new());
        };
        for key in tags.get_ref().keys() {
            validate_tag_key(key).map_err(|e| self.locate(tags.span(), e))?;
        }
        Ok(tags.get_ref().clone())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Defaults that depend on the host: computed by [`AgentArgs::resolve`], given explicitly in tests.
#[derive(Debug, Clone)]
pub struct HostDefaults {
    /// The host name, or why it could not be read.
    pub hostname: Result<String, String>,
    pub data_dir: PathBuf,
}

impl HostDefaults {
    /// The defaults of this host and user.
    pub fn detect() -> Self {
        HostDefaults {
            hostname: hostname(),
            data_dir: default_data_dir(),
        }
    }
}

impl AgentArgs {
    /// Reads the config file (if any) and merges flags, environment, file and defaults.
    pub fn resolve(&self) -> Result<AgentConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => Some(ConfigFile::load(path)?),
            None => None,
        };
        self.resolve_with(file.as_ref(), &HostDefaults::detect())
    }

    /// The merge of [`AgentArgs::resolve`] with its inputs given explicitly.
    pub fn resolve_with(
        &self,
        file: Option<&ConfigFile>,
        host: &HostDefaults,
    ) -> Result<AgentConfig, ConfigError> {
        let empty = FileValues::default();
        let f = file.map_or(&empty, |f| &f.values);
        // An error about a value from the file gets the file's name and line.
        let in_file = |span: std::ops::Range<usize>, e: ConfigError| match file {
            Some(file) => file.locate(span, e),
            None => e,
        };

        let dev = self.dev.or(f.dev).unwrap_or(false);

        let node = match (&self.node, &f.node) {
            (Some(n), _) => validate_node_name(n)?.to_owned(),
            (None, Some(n)) => validate_node_name(n.get_ref())
                .map_err(|e| in_file(n.span(), e))?
                .to_owned(),
            (None, None) => {
                let h = host.hostname.clone().map_err(ConfigError::NoHostname)?;
                validate_node_name(&h).map_err(|e| {
                    ConfigError::NoHostname(format!("the host name is not a valid node name: {e}"))
                })?;
                h
            }
        };

        let bind = match (&self.bind, &f.bind) {
            (Some(b), _) => parse_addr("bind", b, DEFAULT_PORT)?,
            (None, Some(b)) => {
                parse_addr("bind", b.get_ref(), DEFAULT_PORT).map_err(|e| in_file(b.span(), e))?
            }
            (None, None) if dev => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            (None, None) => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        };

        let advertise = match (&self.advertise, &f.advertise) {
            (Some(a), _) => Some(parse_addr("advertise", a, bind.port())?),
            (None, Some(a)) => Some(
                parse_addr("advertise", a.get_ref(), bind.port())
                    .map_err(|e| in_file(a.span(), e))?,
            ),
            (None, None) => None,
        };

        let join = self
            .join
            .clone()
            .or_else(|| f.join.clone())
            .unwrap_or_default();
        let retry_join = self
            .retry_join
            .clone()
            .or_else(|| f.retry_join.clone())
            .unwrap_or_default();

        let mut tags = match file {
            Some(file) => file.tags()?,
            None => BTreeMap::new(),
        };
        for t in self.tags.iter().flatten() {
            let (k, v) = parse_tag(t)?;
            tags.insert(k, v);
        }

        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| f.data_dir.clone())
            .unwrap_or_else(|| host.data_dir.clone());
        let control = self
            .control
            .clone()
            .or_else(|| f.control.clone())
            .unwrap_or_else(|| data_dir.join("control.sock").to_string_lossy().into_owned());
        if control.is_empty() {
            return Err(ConfigError::invalid(
                "control",
                &control,
                "expected a Unix socket path or IP:PORT",
            ));
        }

        // Control API security and metrics. A token given by flag or variable wins over the
        // file's; within one source, a token and a token file are mutually exclusive.
        let control_token = match (&self.control_token, &self.control_token_file) {
            (Some(token), _) => Some(TokenSource::Value(token.clone())),
            (None, Some(path)) => Some(TokenSource::File(path.clone())),
            (None, None) => match (&f.control_token, &f.control_token_file) {
                (Some(_), Some(path)) => {
                    return Err(in_file(
                        path.span(),
                        ConfigError::invalid(
                            "control_token_file",
                            &path.get_ref().to_string_lossy(),
                            "control_token is set too: set one of them",
                        ),
                    ));
                }
                (Some(token), None) => Some(TokenSource::Value(token.clone())),
                (None, Some(path)) => Some(TokenSource::File(path.get_ref().clone())),
                (None, None) => None,
            },
        };
        let parse_metrics = |s: &str| {
            s.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid("metrics", s, "expected IP:PORT, e.g. 127.0.0.1:9946")
            })
        };
        let metrics = match (&self.metrics, &f.metrics) {
            (Some(m), _) => Some(parse_metrics(m)?),
            (None, Some(m)) => Some(parse_metrics(m.get_ref()).map_err(|e| in_file(m.span(), e))?),
            (None, None) => None,
        };

        let profile =
            self.profile
                .or(f.profile)
                .unwrap_or(if dev { Profile::Local } else { Profile::Lan });

        let log_level = self
            .log_level
            .clone()
            .or_else(|| f.log_level.clone())
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        if log_level.trim().is_empty() {
            return Err(ConfigError::invalid(
                "log_level",
                &log_level,
                "expected trace, debug, info, warn, error or a tracing filter",
            ));
        }
        let log_json = self.log_json.or(f.log_json).unwrap_or(false);

        let limit = |setting: &'static str,
                     flag: Option<usize>,
                     file: &Option<Spanned<usize>>,
                     ceiling: usize,
                     default: usize| match (flag, file) {
            (Some(n), _) => validate_limit(setting, n, ceiling),
            (None, Some(n)) => {
                validate_limit(setting, *n.get_ref(), ceiling).map_err(|e| in_file(n.span(), e))
            }
            (None, None) => Ok(default),
        };
        let max_event_bytes = limit(
            "max_event_bytes",
            self.max_event_bytes,
            &f.max_event_bytes,
            MAX_EVENT_BYTES_CEILING,
            DEFAULT_MAX_EVENT_BYTES,
        )?;
        let max_response_bytes = limit(
            "max_response_bytes",
            self.max_response_bytes,
            &f.max_response_bytes,
            MAX_RESPONSE_BYTES_CEILING,
            DEFAULT_MAX_RESPONSE_BYTES,
        )?;

        let duration = |setting: &'static str,
                        flag: &Option<String>,
                        file: &Option<Spanned<String>>|
         -> Result<Duration, ConfigError> {
            match (flag, file) {
                (Some(d), _) => parse_duration(setting, d),
                (None, Some(d)) => {
                    parse_duration(setting, d.get_ref()).map_err(|e| in_file(d.span(), e))
                }
                (None, None) => Ok(DEFAULT_REAP_TIMEOUT),
            }
        };
        let reconnect_timeout = duration(
            "reconnect_timeout",
            &self.reconnect_timeout,
            &f.reconnect_timeout,
        )?;
        let tombstone_timeout = duration(
            "tombstone_timeout",
            &self.tombstone_timeout,
            &f.tombstone_timeout,
        )?;

        let priority_boost = level(
            "priority_boost",
            (self.priority_boost, &f.priority_boost),
            DEFAULT_PRIORITY_BOOST,
            PRIORITY_BOOST_CEILING,
            " nice levels",
            &in_file,
        )?;
        let realtime_priority = level(
            "realtime_priority",
            (self.realtime_priority, &f.realtime_priority),
            DEFAULT_REALTIME_PRIORITY,
            REALTIME_PRIORITY_CEILING,
            "",
            &in_file,
        )?;

        Ok(AgentConfig {
            node,
            bind,
            advertise,
            join,
            retry_join,
            tags,
            data_dir,
            control,
            control_token,
            metrics,
            profile,
            log_level,
            log_json,
            dev,
            max_event_bytes,
            max_response_bytes,
            reconnect_timeout,
            tombstone_timeout,
            priority_boost,
            realtime_priority,
            rejoin_after_leave: self
                .rejoin_after_leave
                .or(f.rejoin_after_leave)
                .unwrap_or(false),
            encrypt: match (&self.encrypt, &f.encrypt) {
                (Some(key), _) => Some(validate_key(key)?),
                (None, Some(key)) => {
                    Some(validate_key(key.get_ref()).map_err(|e| in_file(key.span(), e))?)
                }
                (None, None) => None,
            },
            handlers: handlers::combine(
                handlers::from_flags(self.event_handler.as_deref().unwrap_or_default())?,
                file.map(handlers::from_file)
                    .transpose()?
                    .unwrap_or_default(),
            )?,
            config_file: file.map(|f| f.path.clone()),
        })
    }

    /// The effective reloadable settings after re-reading the config file (for SIGHUP): the file's
    /// values with flags and `RUMOR_*` variables still winning, and defaults for what is unset.
    /// Without a config file this returns the flag/env values unchanged.
    pub fn reload(&self) -> Result<Reloadable, ConfigError> {
        let mut r = match &self.config {
            Some(path) => reload_file(path)?,
            None => Reloadable::default(),
        };
        for t in self.tags.iter().flatten() {
            let (k, v) = parse_tag(t)?;
            r.tags.insert(k, v);
        }
        r.log_level = Some(
            self.log_level
                .clone()
                .or(r.log_level)
                .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
        );
        r.handlers = handlers::combine(
            handlers::from_flags(self.event_handler.as_deref().unwrap_or_default())?,
            r.handlers,
        )?;
        Ok(r)
    }
}

/// The hot-reloadable values (tags, log level) as the file at `path` sets them now.
///
/// These are the *file's* values only: a setting also given by a flag or an `RUMOR_*` variable
/// keeps that value (flags and environment win over the file, on reload as at start); use
/// [`AgentArgs::reload`] for the merged result.
pub fn reload_file(path: &Path) -> Result<Reloadable, ConfigError> {
    let file = ConfigFile::load(path)?;
    Ok(Reloadable {
        tags: file.tags()?,
        log_level: file.values.log_level.clone(),
        handlers: handlers::from_file(&file)?,
    })
}

/// The default data directory: `/var/lib/rumor` for root, else `$XDG_STATE_HOME/rumor`, else
/// `$HOME/.local/state/rumor` (else `./rumor-data` when even `$HOME` is unset).
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    data_dir_for(
        uid,
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn data_dir_for(uid: u32, xdg_state_home: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/var/lib/rumor");
    }
    // The XDG spec says relative paths in these variables are invalid and must be ignored.
    if let Some(xdg) = xdg_state_home.filter(|p| p.is_absolute()) {
        return xdg.join("rumor");
    }
    match home.filter(|p| !p.as_os_str().is_empty()) {
        Some(home) => home.join(".local/state/rumor"),
        None => PathBuf::from("rumor-data"),
    }
}

/// This host's name, from gethostname(2) or `/proc/sys/kernel/hostname`.
pub fn hostname() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length; gethostname NUL-terminates on
    // success when the name fits (and we leave room for the terminator).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end])
            && !name.is_empty()
        {
            return Ok(name.to_owned());
        }
    }
    let gethostname_err = std::io::Error::last_os_error();
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("gethostname failed: {gethostname_err}"))
}

/// Checks a node name: 1-64 bytes of `[A-Za-z0-9._-]`. Returns it unchanged.
pub fn validate_node_name(name: &str) -> Result<&str, ConfigError> {
    const RULE: &str = "a node name is 1-64 bytes of letters, digits, '.', '_' and '-'";
    check_node_name(name).map_err(|_| ConfigError::invalid("node name", name, RULE))?;
    Ok(name)
}

const TAG_KEY_RULE: &str = "a tag key is 1-64 bytes of letters, digits, '.', '_' and '-'";

fn validate_tag_key(key: &str) -> Result<(), ConfigError> {
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
    Ok((k.to_owned(), v.to_owned()))
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

/// Checks an encryption key's form (never echoing the key itself in the error).
fn validate_key(key: &str) -> Result<String, ConfigError> {
    crate::cluster::keyring::Key::parse(key)
        .map_err(|e| ConfigError::invalid("encryption key", "(hidden)", e.to_string()))?;
    Ok(key.trim().to_string())
}

/// A size limit must leave every message inside one UDP packet.
fn validate_limit(setting: &'static str, n: usize, ceiling: usize) -> Result<usize, ConfigError> {
    if n == 0 || n > ceiling {
        return Err(ConfigError::invalid(
            setting,
            &n.to_string(),
            format!("must be between 1 and {ceiling}: it must fit in one UDP packet"),
        ));
    }
    Ok(n)
}

/// A `0 (off)..=ceiling` setting: the flag or variable, else the file (an error there located
/// by `in_file`), else `default`.
fn level(
    setting: &'static str,
    (flag, file): (Option<u8>, &Option<Spanned<u8>>),
    default: u8,
    ceiling: u8,
    unit: &str,
    in_file: &impl Fn(std::ops::Range<usize>, ConfigError) -> ConfigError,
) -> Result<u8, ConfigError> {
    let check = |n: u8| {
        if n > ceiling {
            return Err(ConfigError::invalid(
                setting,
                &n.to_string(),
                format!("must be between 0 (off) and {ceiling}{unit}"),
            ));
        }
        Ok(n)
    };
    match (flag, file) {
        (Some(n), _) => check(n),
        (None, Some(n)) => check(*n.get_ref()).map_err(|e| in_file(n.span(), e)),
        (None, None) => Ok(default),
    }
}

#[cfg(test)]
mod tests;
