//! The merge: flags and `RUMOR_*` variables, then the config file, then the defaults.
//!
//! Every setting goes through [`Sources::get`] (or [`Sources::value`] for one with no rule to
//! check), which applies the precedence and locates errors in the source that gave the bad
//! value. Three settings merge rather than pick one source: tags (key by key), handlers (the
//! flags' then the file's) and the control token (a token or a token file, whichever the
//! winning source gives).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use rumor_handlers::HandlerConfig;
use toml::Spanned;

use super::file::{ConfigFile, FileValues};
use super::validate::{
    parse_addr, parse_dns, parse_duration, parse_metrics, parse_tag, parse_trusted_keys,
    validate_connections, validate_control, validate_dns_domain, validate_key, validate_level,
    validate_limit, validate_log_level, validate_node_name,
};
use super::{
    AgentArgs, AgentConfig, ConfigError, DEFAULT_LOG_LEVEL, DEFAULT_MAX_CONTROL_CONNECTIONS,
    DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_PORT, DEFAULT_PRIORITY_BOOST,
    DEFAULT_REALTIME_PRIORITY, DEFAULT_REAP_TIMEOUT, HostDefaults, MAX_CONTROL_CONNECTIONS_CEILING,
    MAX_EVENT_BYTES_CEILING, MAX_RESPONSE_BYTES_CEILING, PRIORITY_BOOST_CEILING,
    REALTIME_PRIORITY_CEILING, Reloadable, checks, handlers,
};
use crate::cluster::Profile;
use crate::cluster::node::events::{DEFAULT_RETENTION_AGE, DEFAULT_RETENTION_COUNT, Retention};
use crate::control::TokenSource;

/// Where one resolution finds its settings: the flags and variables, and the config file.
#[derive(Clone, Copy)]
pub(super) struct Sources<'a> {
    pub args: &'a AgentArgs,
    pub file: Option<&'a ConfigFile>,
}

impl Sources<'_> {
    /// One setting from the first source that gives it: the flag or its `RUMOR_*` variable
    /// (`given` selects the field of [`AgentArgs`]; clap has already put the flag first), else
    /// the config file's key that `in_file` selects. `None` when neither gives it: the
    /// caller's default applies.
    ///
    /// `check` turns the raw value into the setting. Its error is prefixed with where the value
    /// came from: `--bind or RUMOR_BIND: ...` for `key = "bind"`, or `FILE:LINE:COLUMN: ...`.
    pub fn get<V, T>(
        self,
        key: &'static str,
        given: fn(&AgentArgs) -> &Option<V>,
        in_file: fn(&FileValues) -> &Option<Spanned<V>>,
        check: impl Fn(&V) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        if let Some(value) = given(self.args) {
            return check(value)
                .map(Some)
                .map_err(|e| ConfigError::given(key, e));
        }
        let Some(file) = self.file else {
            return Ok(None);
        };
        match in_file(&file.values) {
            Some(value) => check(value.get_ref())
                .map(Some)
                .map_err(|e| file.locate(value.span(), e)),
            None => Ok(None),
        }
    }

    /// [`Sources::get`] for a setting whose every value is valid.
    pub fn value<V: Clone>(
        self,
        given: fn(&AgentArgs) -> &Option<V>,
        in_file: fn(&FileValues) -> &Option<Spanned<V>>,
    ) -> Option<V> {
        given(self.args).clone().or_else(|| {
            self.file
                .and_then(|file| in_file(&file.values).as_ref())
                .map(|value| value.get_ref().clone())
        })
    }
}

/// `setting!(src.bind, check)`: [`Sources::get`] of the flag field and the file key both named
/// `bind`, so the key in errors is always the real one. `setting!(src.dev)`: [`Sources::value`].
macro_rules! setting {
    ($src:ident . $key:ident, $check:expr $(,)?) => {
        $src.get(stringify!($key), |a| &a.$key, |f| &f.$key, $check)
    };
    ($src:ident . $key:ident) => {
        $src.value(|a| &a.$key, |f| &f.$key)
    };
}

impl AgentArgs {
    /// Reads the config file (if any) and merges flags, environment, file and defaults.
    pub fn resolve(&self) -> Result<AgentConfig, ConfigError> {
        let file = self.load_file()?;
        self.resolve_with(file.as_ref(), &HostDefaults::detect())
    }

    /// The merge of [`AgentArgs::resolve`] with its inputs given explicitly.
    pub fn resolve_with(
        &self,
        file: Option<&ConfigFile>,
        host: &HostDefaults,
    ) -> Result<AgentConfig, ConfigError> {
        let src = Sources { args: self, file };

        let dev = setting!(src.dev).unwrap_or(false);

        let node = match setting!(src.node, |n| validate_node_name(n).map(str::to_owned))? {
            Some(node) => node,
            None => {
                let h = host.hostname.clone().map_err(ConfigError::NoHostname)?;
                validate_node_name(&h).map_err(|e| {
                    ConfigError::NoHostname(format!("the host name is not a valid node name: {e}"))
                })?;
                h
            }
        };

        let bind =
            setting!(src.bind, |b| parse_addr("bind", b, DEFAULT_PORT))?.unwrap_or_else(|| {
                let ip = if dev { [127, 0, 0, 1] } else { [0, 0, 0, 0] };
                SocketAddr::from((ip, DEFAULT_PORT))
            });
        let advertise = setting!(src.advertise, |a| parse_addr("advertise", a, bind.port()))?;

        let join = setting!(src.join).unwrap_or_default();
        let retry_join = setting!(src.retry_join).unwrap_or_default();
        let tags = self.tags(file)?;
        let tags_file = setting!(src.tags_file, |path| {
            if tags.is_empty() {
                Ok(path.clone())
            } else {
                Err(ConfigError::invalid(
                    "tags_file",
                    &path.to_string_lossy(),
                    "tags are set too (--tag, RUMOR_TAGS or [tags]): keep the node's tags in one place",
                ))
            }
        })?;

        let data_dir = setting!(src.data_dir).unwrap_or_else(|| host.data_dir.clone());
        let control = setting!(src.control, |c| validate_control(c))?
            .unwrap_or_else(|| data_dir.join("control.sock").to_string_lossy().into_owned());
        let control_token = self.control_token(file)?;
        let metrics = setting!(src.metrics, |m| parse_metrics(m))?;

        let profile =
            setting!(src.profile).unwrap_or(if dev { Profile::Local } else { Profile::Lan });
        let log_level = setting!(src.log_level, |l| validate_log_level(l))?
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
        let log_json = setting!(src.log_json).unwrap_or(false);

        let max_event_bytes = setting!(src.max_event_bytes, |&n| validate_limit(
            "max_event_bytes",
            n,
            MAX_EVENT_BYTES_CEILING
        ))?
        .unwrap_or(DEFAULT_MAX_EVENT_BYTES);
        let max_response_bytes = setting!(src.max_response_bytes, |&n| validate_limit(
            "max_response_bytes",
            n,
            MAX_RESPONSE_BYTES_CEILING
        ))?
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);

        let reconnect_timeout = setting!(src.reconnect_timeout, |d| parse_duration(
            "reconnect_timeout",
            d
        ))?
        .unwrap_or(DEFAULT_REAP_TIMEOUT);
        let tombstone_timeout = setting!(src.tombstone_timeout, |d| parse_duration(
            "tombstone_timeout",
            d
        ))?
        .unwrap_or(DEFAULT_REAP_TIMEOUT);

        let priority_boost = setting!(src.priority_boost, |&n| validate_level(
            "priority_boost",
            n,
            PRIORITY_BOOST_CEILING,
            " nice levels"
        ))?
        .unwrap_or(DEFAULT_PRIORITY_BOOST);
        let realtime_priority = setting!(src.realtime_priority, |&n| validate_level(
            "realtime_priority",
            n,
            REALTIME_PRIORITY_CEILING,
            ""
        ))?
        .unwrap_or(DEFAULT_REALTIME_PRIORITY);

        let rejoin_after_leave = setting!(src.rejoin_after_leave).unwrap_or(false);
        let plugin_trusted_keys =
            setting!(src.plugin_trusted_keys, |k| parse_trusted_keys(k))?.unwrap_or_default();
        let encrypt = setting!(src.encrypt, |k| validate_key(k))?;
        let encrypt_verify_incoming = setting!(src.encrypt_verify_incoming).unwrap_or(true);
        let encrypt_verify_outgoing = setting!(src.encrypt_verify_outgoing).unwrap_or(true);
        let event_retention = Retention {
            count: setting!(src.event_retention).unwrap_or(DEFAULT_RETENTION_COUNT),
            age: setting!(src.event_retention_age, |d| parse_duration(
                "event_retention_age",
                d
            ))?
            .unwrap_or(DEFAULT_RETENTION_AGE),
        };
        let keyring_file = setting!(src.keyring_file);
        let max_control_connections = setting!(src.max_control_connections, |&n| {
            validate_connections(
                "max_control_connections",
                n,
                MAX_CONTROL_CONNECTIONS_CEILING,
            )
        })?
        .unwrap_or(DEFAULT_MAX_CONTROL_CONNECTIONS);

        let dns_domain = setting!(src.dns_domain, |d| validate_dns_domain(d))?
            .unwrap_or_else(|| crate::dns::DEFAULT_DOMAIN.to_owned());
        let dns_ttl = setting!(src.dns_ttl, |d| parse_duration("dns_ttl", d))?.unwrap_or_default();
        let dns_soa_min_ttl = setting!(src.dns_soa_min_ttl, |d| parse_duration(
            "dns_soa_min_ttl",
            d
        ))?
        .unwrap_or_default();
        let dns_reverse = setting!(src.dns_reverse).unwrap_or(false);
        let dns = setting!(src.dns, |a| parse_dns(a))?.map(|addr| crate::dns::DnsConfig {
            addr,
            domain: dns_domain,
            ttl: dns_ttl,
            soa_min_ttl: dns_soa_min_ttl,
            reverse: dns_reverse,
        });

        Ok(AgentConfig {
            node,
            bind,
            advertise,
            join,
            retry_join,
            tags,
            tags_file,
            data_dir,
            control,
            control_token,
            metrics,
            dns,
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
            rejoin_after_leave,
            plugin_trusted_keys,
            encrypt,
            encrypt_verify_incoming,
            encrypt_verify_outgoing,
            event_retention,
            keyring_file,
            max_control_connections,
            handlers: self.handlers(file)?,
            checks: checks::combine(self.check.as_deref().unwrap_or_default(), file)?,
            config_file: file.map(|f| f.path.clone()),
            direct_push_limit: self
                .direct_push_limit
                .unwrap_or(crate::cluster::plumtree::DIRECT_LIMIT),
        })
    }

    /// The effective reloadable settings after re-reading the config file (for SIGHUP): the file's
    /// values with flags and `RUMOR_*` variables still winning, and defaults for what is unset.
    /// Without a config file this returns the flag/env values unchanged.
    pub fn reload(&self) -> Result<Reloadable, ConfigError> {
        let file = self.load_file()?;
        let src = Sources {
            args: self,
            file: file.as_ref(),
        };
        Ok(Reloadable {
            tags: self.tags(file.as_ref())?,
            log_level: Some(
                setting!(src.log_level).unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned()),
            ),
            handlers: self.handlers(file.as_ref())?,
            checks: checks::combine(self.check.as_deref().unwrap_or_default(), file.as_ref())?,
            encrypt: setting!(src.encrypt, |k| validate_key(k))?,
            encrypt_verify_incoming: setting!(src.encrypt_verify_incoming).unwrap_or(true),
            encrypt_verify_outgoing: setting!(src.encrypt_verify_outgoing).unwrap_or(true),
            plugin_trusted_keys: setting!(src.plugin_trusted_keys, |k| parse_trusted_keys(k))?
                .unwrap_or_default(),
        })
    }

    fn load_file(&self) -> Result<Option<ConfigFile>, ConfigError> {
        self.config.as_deref().map(ConfigFile::load).transpose()
    }

    /// The file's `[tags]`, with each tag a flag or variable gives set over them, key by key.
    fn tags(&self, file: Option<&ConfigFile>) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut tags = file.map(ConfigFile::tags).transpose()?.unwrap_or_default();
        // --tag replaces RUMOR_TAGS, as a flag replaces its variable.
        for tag in self
            .tags
            .as_ref()
            .or(self.tags_list.as_ref())
            .into_iter()
            .flatten()
        {
            let (k, v) = parse_tag(tag).map_err(|e| ConfigError::given("tags", e))?;
            tags.insert(k, v);
        }
        Ok(tags)
    }

    /// The `--event-handler` handlers, then the file's `[[handler]]` tables.
    fn handlers(&self, file: Option<&ConfigFile>) -> Result<Vec<HandlerConfig>, ConfigError> {
        handlers::combine(
            handlers::from_flags(self.event_handler.as_deref().unwrap_or_default())?,
            file.map(handlers::from_file)
                .transpose()?
                .unwrap_or_default(),
        )
    }

    /// The control token: a token or a token file from the flags or variables (clap refuses
    /// both), else from the file, which must not set both either.
    fn control_token(&self, file: Option<&ConfigFile>) -> Result<Option<TokenSource>, ConfigError> {
        let given = TokenSource::from_value_or_file(
            self.control_token.clone(),
            self.control_token_file.clone(),
        );
        let Some(file) = file.filter(|_| given.is_none()) else {
            return Ok(given);
        };
        let f = &file.values;
        if let (Some(_), Some(path)) = (&f.control_token, &f.control_token_file) {
            return Err(file.locate(
                path.span(),
                ConfigError::invalid(
                    "control_token_file",
                    &path.get_ref().to_string_lossy(),
                    "control_token is set too: set one of them",
                ),
            ));
        }
        Ok(TokenSource::from_value_or_file(
            f.control_token.as_ref().map(|t| t.get_ref().clone()),
            f.control_token_file.as_ref().map(|p| p.get_ref().clone()),
        ))
    }
}

/// The hot-reloadable values (tags, log level) as the file at `path` sets them now.
///
/// These are the *file's* values only: a setting also given by a flag or an `RUMOR_*` variable
/// keeps that value (flags and environment win over the file, on reload as at start); use
/// [`AgentArgs::reload`] for the merged result.
pub fn reload_file(path: &Path) -> Result<Reloadable, ConfigError> {
    let file = ConfigFile::load(path)?;
    let flag = |v: &Option<Spanned<bool>>| v.as_ref().is_none_or(|b| *b.get_ref());
    Ok(Reloadable {
        tags: file.tags()?,
        log_level: file.values.log_level.as_ref().map(|l| l.get_ref().clone()),
        handlers: handlers::from_file(&file)?,
        checks: checks::from_file(&file)?,
        encrypt: file.values.encrypt.as_ref().map(|k| k.get_ref().clone()),
        encrypt_verify_incoming: flag(&file.values.encrypt_verify_incoming),
        encrypt_verify_outgoing: flag(&file.values.encrypt_verify_outgoing),
        plugin_trusted_keys: file
            .values
            .plugin_trusted_keys
            .as_ref()
            .map(|k| parse_trusted_keys(k.get_ref()).map_err(|e| file.locate(k.span(), e)))
            .transpose()?
            .unwrap_or_default(),
    })
}
