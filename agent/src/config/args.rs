//! The flags of `rumor agent`, each with its `RUMOR_*` environment variable (clap reads both,
//! the flag first), and the names a setting goes by on the command line.

use std::path::PathBuf;

use clap::Args;

use crate::cluster::Profile;

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

    /// A tag of this node, KEY=VALUE (repeatable; RUMOR_TAGS takes k=v,k=v). The value is
    /// taken whole: a comma in it is refused with the reason, not split into more tags.
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Option<Vec<String>>,

    /// RUMOR_TAGS, a comma-separated list (hidden: --tag is the flag). Separate from --tag so
    /// that the flag's value is never split at commas.
    #[arg(
        long = "tags-list",
        env = "RUMOR_TAGS",
        value_name = "K=V,K=V",
        value_delimiter = ',',
        hide = true
    )]
    pub tags_list: Option<Vec<String>>,

    /// Keep this node's tags in this JSON file (Serf's tags file works as it is): read at
    /// start, rewritten whenever they change (`rumor tags`), so they survive restarts. Not
    /// with --tag or [tags].
    #[arg(long, env = "RUMOR_TAGS_FILE", value_name = "PATH")]
    pub tags_file: Option<PathBuf>,

    /// Directory for the control socket, snapshots and plugins
    /// [default: /var/lib/rumor as root, else $XDG_STATE_HOME/rumor or ~/.local/state/rumor].
    #[arg(long, env = "RUMOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Control API endpoint: a Unix socket path or IP:PORT (TCP requires --control-token)
    /// [default: <data-dir>/control.sock].
    #[arg(long, env = "RUMOR_CONTROL", value_name = "ENDPOINT")]
    pub control: Option<String>,

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
    /// query:NAME, or * — comma-separated; without `FILTER=` every event runs it. These
    /// handlers are named event-handler-1, -2, ... and keep the defaults (timeout 60s, no
    /// coalescing). To set a name, timeout, coalescing window, member tags or environment,
    /// write a [[handler]] table in the config file instead, e.g. name = "lb", events =
    /// ["member-join"], command = "/etc/lb.sh", timeout = "30s", coalesce = "2s"
    /// (docs/handlers.md).
    #[arg(
        long = "event-handler",
        env = "RUMOR_EVENT_HANDLER",
        value_name = "[FILTER=]COMMAND"
    )]
    pub event_handler: Option<Vec<String>>,

    /// A health check (repeatable): run COMMAND every 10s, publishing its state as the tag
    /// health_NAME (exit 0 passing, 1 warning, else critical). More settings (HTTP and TCP
    /// checks, interval, rise/fall, notify) with [[check]] tables; see docs/health.md.
    #[arg(long = "check", env = "RUMOR_CHECK", value_name = "NAME=COMMAND")]
    pub check: Option<Vec<String>>,

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

    /// The keyring file: a JSON list of base64 keys, primary first (Serf's keyring file
    /// works as it is). Read at start and rewritten by `rumor keys`; when it does not exist
    /// yet, --encrypt creates it [default: keyring.json in the data directory].
    #[arg(long, env = "RUMOR_KEYRING_FILE", value_name = "PATH")]
    pub keyring_file: Option<PathBuf>,

    /// On start, rejoin the members of the last run (from the snapshot in the data
    /// directory) even if this node left gracefully last time [default: false].
    #[arg(long, env = "RUMOR_REJOIN_AFTER_LEAVE", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub rejoin_after_leave: Option<bool>,

    /// Accept only plugins signed by one of these Ed25519 public keys (base64, as `rumor plugin
    /// keygen` prints them; repeatable) [default: none, signatures are not checked].
    #[arg(
        long,
        env = "RUMOR_PLUGIN_TRUSTED_KEYS",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub plugin_trusted_keys: Option<Vec<String>>,

    /// How long a failed member stays listed before it is reaped, e.g. 30m, 24h [default: 24h].
    #[arg(long, env = "RUMOR_RECONNECT_TIMEOUT", value_name = "DURATION")]
    pub reconnect_timeout: Option<String>,

    /// How long a member that left stays listed before it is reaped [default: 24h].
    #[arg(long, env = "RUMOR_TOMBSTONE_TIMEOUT", value_name = "DURATION")]
    pub tombstone_timeout: Option<String>,

    /// How many user events each agent keeps for members that missed them (a partition, a
    /// restart); older ones are lost to a member that was away longer, loudly [default: 1024].
    #[arg(long, env = "RUMOR_EVENT_RETENTION", value_name = "N")]
    pub event_retention: Option<usize>,

    /// How long each agent keeps a user event for members that missed it [default: 1h].
    #[arg(long, env = "RUMOR_EVENT_RETENTION_AGE", value_name = "DURATION")]
    pub event_retention_age: Option<String>,

    /// With encryption: refuse gossip sent in the clear. Set false (with the next flag false)
    /// to move a live cluster to encryption in steps (docs/security.md) [default: true].
    #[arg(long, env = "RUMOR_ENCRYPT_VERIFY_INCOMING", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub encrypt_verify_incoming: Option<bool>,

    /// With encryption: seal the gossip this agent sends. False only while a cluster moves to
    /// encryption (docs/security.md) [default: true].
    #[arg(long, env = "RUMOR_ENCRYPT_VERIFY_OUTGOING", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub encrypt_verify_outgoing: Option<bool>,
    /// Connections each control API listener (the control endpoint, and --metrics) keeps at
    /// most; past that the connection idle the longest is closed for a new one (1..=65536)
    /// [default: 128].
    #[arg(long, env = "RUMOR_MAX_CONTROL_CONNECTIONS", value_name = "N")]
    pub max_control_connections: Option<usize>,

    /// Answer DNS for the cluster on this address, UDP and TCP, e.g. 127.0.0.1:8600
    /// (docs/dns.md) [default: off].
    #[arg(long, env = "RUMOR_DNS", value_name = "IP:PORT")]
    pub dns: Option<String>,

    /// The domain DNS answers for, e.g. rumor or cluster.example [default: rumor].
    #[arg(long, env = "RUMOR_DNS_DOMAIN", value_name = "DOMAIN")]
    pub dns_domain: Option<String>,

    /// TTL of DNS answers, e.g. 0s or 5s [default: 0s].
    #[arg(long, env = "RUMOR_DNS_TTL", value_name = "DURATION")]
    pub dns_ttl: Option<String>,

    /// The SOA's minimum TTL: how long resolvers cache NXDOMAIN and empty answers [default: 0s].
    #[arg(long, env = "RUMOR_DNS_SOA_MIN_TTL", value_name = "DURATION")]
    pub dns_soa_min_ttl: Option<String>,

    /// Also answer PTR for the members' addresses under in-addr.arpa and ip6.arpa
    /// [default: false].
    #[arg(long, env = "RUMOR_DNS_REVERSE", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub dns_reverse: Option<bool>,

    /// For tests only, hence hidden and not a file key: the largest cluster (members besides
    /// this node) this node sends its own events to every member directly; larger ones use
    /// the broadcast tree. Lowered, a small cluster of real processes exercises the tree.
    #[arg(long, env = "RUMOR_DIRECT_PUSH_LIMIT", value_name = "N", hide = true)]
    pub direct_push_limit: Option<usize>,
}

/// The flag and the environment variable that set config key `key`: `--KEY-WITH-DASHES` and
/// `RUMOR_KEY`, except where the flag reads better singular or named (`--tag` for `tags`,
/// `--event-handler` for `[[handler]]`). A test checks every file key against the flags.
pub(super) fn flag_and_variable(key: &str) -> (String, String) {
    match key {
        "tags" => ("--tag".into(), "RUMOR_TAGS".into()),
        "handler" => ("--event-handler".into(), "RUMOR_EVENT_HANDLER".into()),
        _ => (
            format!("--{}", key.replace('_', "-")),
            format!("RUMOR_{}", key.to_ascii_uppercase()),
        ),
    }
}
