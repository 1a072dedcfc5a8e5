//! One handler's settings ([`HandlerConfig`]) and which runtime it runs on ([`RuntimeConfig`]),
//! their validation, and which events (and which members of a member event) a handler is given.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::docker::{Docker, DockerConfig};
use crate::event::{Event, Tags};
use crate::filter::{EventFilter, HandlerSpec};
use crate::runtime::Runtime;
use crate::runtime::RuntimeContext;
use crate::shell::Shell;
use crate::template::{Template, TemplateConfig};
use crate::wasm::{Wasm, WasmConfig};

/// A run that takes longer than this is killed, unless the handler sets its own timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A handler: which events it runs for and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// Unique among the handlers; shown in logs and `rumor info`.
    pub name: String,
    /// Which events run it.
    pub filter: EventFilter,
    /// What it runs: which runtime, with that runtime's settings.
    pub runtime: RuntimeConfig,
    /// Run only for members whose tags hold every one of these key/value pairs (exact values).
    /// A member event keeps only the matching members, and is skipped when none match. User
    /// events and queries have no member and are not filtered by tags.
    pub tags_filter: BTreeMap<String, String>,
    /// After this long the run is stopped (a shell's process group is killed).
    pub timeout: Duration,
    /// Coalescing window: member events and coalescable user events arriving within it are
    /// merged into fewer runs (see [`crate::coalesce`]). `None`: every event runs on its own.
    pub coalesce: Option<Duration>,
    /// With a coalescing window: the held events run as soon as none arrived for this long,
    /// without waiting for the window's end (Serf's "quiescent period"). `None`: the window
    /// always runs its full length.
    pub coalesce_quiet: Option<Duration>,
    /// Extra environment for the command, on top of the agent's and the contract's.
    pub env: BTreeMap<String, String>,
    /// Handlers naming the same group never run at the same time (Serf runs all its handlers
    /// one after the other); `None`: this handler runs beside every other.
    pub serial_group: Option<String>,
}

/// Which runtime a handler runs on, with its settings. A `[[handler]]` table picks it by its
/// key (`command` for the shell, `template` for a template). Each variant becomes a [`Runtime`]
/// when the handler starts; a reload keeps a handler's task and queue only when this is
/// unchanged.
#[derive(Clone)]
pub enum RuntimeConfig {
    /// `/bin/sh -c COMMAND` under Serf's contract ([`crate::shell`]).
    Shell { command: String },
    /// Render a template with the cluster state into a file ([`crate::template`]).
    Template(Box<TemplateConfig>),
    /// A WASI command run in the wasmi interpreter under limits ([`crate::wasm`]).
    Wasm(Box<WasmConfig>),
    /// Roll an app's container on `deploy` events ([`crate::docker`]).
    Docker(Box<DockerConfig>),
    /// A runtime the embedder provides (a test's, or one built into the agent), shown as
    /// `label` where a shell handler shows its command. Equal only to the same `Arc`.
    Custom {
        label: String,
        runtime: Arc<dyn Runtime>,
    },
}

impl RuntimeConfig {
    /// A shell handler running `command`.
    pub fn shell(command: impl Into<String>) -> RuntimeConfig {
        RuntimeConfig::Shell {
            command: command.into(),
        }
    }

    /// The command of a shell handler.
    pub fn command(&self) -> Option<&str> {
        match self {
            RuntimeConfig::Shell { command } => Some(command),
            _ => None,
        }
    }

    /// The settings of a template handler.
    pub fn template(&self) -> Option<&TemplateConfig> {
        match self {
            RuntimeConfig::Template(template) => Some(template),
            _ => None,
        }
    }

    /// The settings of a WASM handler.
    pub fn wasm(&self) -> Option<&WasmConfig> {
        match self {
            RuntimeConfig::Wasm(wasm) => Some(wasm),
            _ => None,
        }
    }

    /// The runtime that runs the handler `handler`'s runs; made once when the handler starts.
    pub(crate) fn runtime(&self, handler: &str, context: &RuntimeContext) -> Arc<dyn Runtime> {
        match self {
            RuntimeConfig::Shell { command } => Arc::new(Shell {
                command: command.clone(),
            }),
            RuntimeConfig::Template(config) => Arc::new(Template::new(handler, config, context)),
            RuntimeConfig::Wasm(config) => Arc::new(Wasm::new(config)),
            RuntimeConfig::Docker(config) => Arc::new(Docker::new(config, context)),
            RuntimeConfig::Custom { runtime, .. } => runtime.clone(),
        }
    }
}

impl fmt::Display for RuntimeConfig {
    /// What the handler runs, for logs and `rumor info`: a shell handler's command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeConfig::Shell { command } => f.write_str(command),
            RuntimeConfig::Template(template) => template.fmt(f),
            RuntimeConfig::Wasm(wasm) => wasm.fmt(f),
            RuntimeConfig::Docker(docker) => write!(f, "docker deploys of {}", docker.app),
            RuntimeConfig::Custom { label, .. } => f.write_str(label),
        }
    }
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeConfig::Shell { command } => {
                f.debug_struct("Shell").field("command", command).finish()
            }
            RuntimeConfig::Template(template) => f.debug_tuple("Template").field(template).finish(),
            RuntimeConfig::Wasm(wasm) => f.debug_tuple("Wasm").field(wasm).finish(),
            RuntimeConfig::Docker(docker) => f.debug_tuple("Docker").field(docker).finish(),
            RuntimeConfig::Custom { label, .. } => {
                f.debug_struct("Custom").field("label", label).finish()
            }
        }
    }
}

impl PartialEq for RuntimeConfig {
    fn eq(&self, other: &RuntimeConfig) -> bool {
        match (self, other) {
            (RuntimeConfig::Shell { command: a }, RuntimeConfig::Shell { command: b }) => a == b,
            (RuntimeConfig::Template(a), RuntimeConfig::Template(b)) => a == b,
            (RuntimeConfig::Wasm(a), RuntimeConfig::Wasm(b)) => a == b,
            (RuntimeConfig::Docker(a), RuntimeConfig::Docker(b)) => a == b,
            (
                RuntimeConfig::Custom {
                    label: a,
                    runtime: x,
                },
                RuntimeConfig::Custom {
                    label: b,
                    runtime: y,
                },
            ) => a == b && std::ptr::addr_eq(Arc::as_ptr(x), Arc::as_ptr(y)),
            _ => false,
        }
    }
}

impl Eq for RuntimeConfig {}

impl HandlerConfig {
    /// A shell handler with the default settings: no tag filter, [`DEFAULT_TIMEOUT`], no
    /// coalescing, no extra environment.
    pub fn new(
        name: impl Into<String>,
        filter: EventFilter,
        command: impl Into<String>,
    ) -> HandlerConfig {
        HandlerConfig::with_runtime(name, filter, RuntimeConfig::shell(command))
    }

    /// A handler on `runtime`, with the same defaults as [`HandlerConfig::new`].
    pub fn with_runtime(
        name: impl Into<String>,
        filter: EventFilter,
        runtime: RuntimeConfig,
    ) -> HandlerConfig {
        HandlerConfig {
            name: name.into(),
            filter,
            runtime,
            tags_filter: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            coalesce: None,
            coalesce_quiet: None,
            env: BTreeMap::new(),
            serial_group: None,
        }
    }

    /// Coalesces as Serf's agent does: events run together at most
    /// [`SERF_COALESCE`](crate::coalesce::SERF_COALESCE) after the first, sooner once none came
    /// for [`SERF_COALESCE_QUIET`](crate::coalesce::SERF_COALESCE_QUIET).
    pub fn coalesce_like_serf(&mut self) {
        self.coalesce = Some(crate::coalesce::SERF_COALESCE);
        self.coalesce_quiet = Some(crate::coalesce::SERF_COALESCE_QUIET);
    }

    /// A handler from a `--event-handler` flag; the agent picks the name.
    pub fn from_spec(name: impl Into<String>, spec: HandlerSpec) -> HandlerConfig {
        HandlerConfig::new(name, spec.filter, spec.command)
    }

    /// Checks what the type cannot: a name, a command, a timeout above zero, and `env` entries
    /// a process environment can hold.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = || self.name.clone();
        if self.name.trim().is_empty() {
            return Err(ConfigError::EmptyName {
                command: self.runtime.to_string(),
            });
        }
        if self
            .runtime
            .command()
            .is_some_and(|command| command.trim().is_empty())
        {
            return Err(ConfigError::EmptyCommand { name: name() });
        }
        if let Some(template) = self.runtime.template() {
            template
                .validate()
                .map_err(|message| ConfigError::Template {
                    name: name(),
                    message,
                })?;
        }
        if let Some(wasm) = self.runtime.wasm() {
            wasm.validate().map_err(|message| ConfigError::Wasm {
                name: name(),
                message,
            })?;
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout { name: name() });
        }
        if self.coalesce.is_some_and(|window| window.is_zero()) {
            return Err(ConfigError::ZeroCoalesce { name: name() });
        }
        match (self.coalesce, self.coalesce_quiet) {
            (_, Some(quiet)) if quiet.is_zero() => {
                return Err(ConfigError::ZeroCoalesceQuiet { name: name() });
            }
            (None, Some(_)) => return Err(ConfigError::QuietWithoutCoalesce { name: name() }),
            _ => {}
        }
        if self
            .serial_group
            .as_ref()
            .is_some_and(|group| group.trim().is_empty())
        {
            return Err(ConfigError::EmptySerialGroup { name: name() });
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(ConfigError::BadEnvName {
                    name: name(),
                    key: key.clone(),
                });
            }
            if value.contains('\0') {
                return Err(ConfigError::BadEnvValue {
                    name: name(),
                    key: key.clone(),
                });
            }
        }
        Ok(())
    }

    /// What this handler gets of `event`: `None` when its filter does not select the event or
    /// no member matches its tag filter; otherwise the event, member events cut down to the
    /// matching members.
    pub fn select(&self, event: &Event) -> Option<Event> {
        if !self.filter.matches(event) {
            return None;
        }
        match event {
            Event::Member { kind, members } if !self.tags_filter.is_empty() => {
                let kept: Vec<_> = members
                    .iter()
                    .filter(|m| self.tags_match(&m.tags))
                    .cloned()
                    .collect();
                (!kept.is_empty()).then_some(Event::Member {
                    kind: *kind,
                    members: kept,
                })
            }
            _ => Some(event.clone()),
        }
    }

    fn tags_match(&self, tags: &Tags) -> bool {
        self.tags_filter
            .iter()
            .all(|(key, want)| tags.get(key) == Some(want))
    }
}

/// Validates a whole handler set: each handler, and unique names.
pub fn validate_all(configs: &[HandlerConfig]) -> Result<(), ConfigError> {
    for (i, config) in configs.iter().enumerate() {
        config.validate()?;
        if configs[..i].iter().any(|c| c.name == config.name) {
            return Err(ConfigError::DuplicateName {
                name: config.name.clone(),
            });
        }
    }
    Ok(())
}

/// A handler setting that cannot work. Each names the handler and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("a handler has an empty name (command {command:?}); give every handler a name")]
    EmptyName { command: String },
    #[error("handler {name:?} has an empty command; set command to what it should run")]
    EmptyCommand { name: String },
    #[error("two handlers are named {name:?}; handler names must be unique")]
    DuplicateName { name: String },
    #[error("handler {name:?} has a zero timeout; set a timeout such as \"60s\"")]
    ZeroTimeout { name: String },
    #[error(
        "handler {name:?} has a zero coalesce window; set a window such as \"2s\" or remove it"
    )]
    ZeroCoalesce { name: String },
    #[error(
        "handler {name:?} has a zero coalesce_quiet; set a quiet period such as \"1s\" or remove it"
    )]
    ZeroCoalesceQuiet { name: String },
    #[error(
        "handler {name:?} sets coalesce_quiet without coalesce; set coalesce (e.g. \"3s\", or \"serf\" for Serf's 3s window and 1s quiet period)"
    )]
    QuietWithoutCoalesce { name: String },
    #[error("handler {name:?} has an empty serial_group; name the group or remove it")]
    EmptySerialGroup { name: String },
    #[error(
        "handler {name:?}: env variable name {key:?} is invalid; it must be non-empty and hold no '=' or NUL"
    )]
    BadEnvName { name: String, key: String },
    #[error("handler {name:?}: the value of env variable {key:?} holds a NUL byte")]
    BadEnvValue { name: String, key: String },
    #[error("template handler {name:?}: {message}")]
    Template { name: String, message: String },
    #[error("wasm handler {name:?}: {message}")]
    Wasm { name: String, message: String },
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::event::{MemberEventKind, MemberInfo, UserEvent};

    fn member(name: &str, role: &str) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: "10.0.0.1".parse::<IpAddr>().unwrap(),
            port: 7946,
            tags: [("role".to_string(), role.to_string())].into(),
        }
    }

    fn web_only() -> HandlerConfig {
        let mut config =
            HandlerConfig::new("lb", EventFilter::parse("member-join,user").unwrap(), "x");
        config.tags_filter.insert("role".into(), "web".into());
        config
    }

    #[test]
    fn member_events_keep_only_matching_members() {
        let event = Event::Member {
            kind: MemberEventKind::Join,
            members: vec![member("a", "web"), member("b", "db"), member("c", "web")],
        };
        let Some(Event::Member { members, .. }) = web_only().select(&event) else {
            panic!("selected nothing");
        };
        let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);

        let only_db = Event::Member {
            kind: MemberEventKind::Join,
            members: vec![member("b", "db")],
        };
        assert_eq!(web_only().select(&only_db), None);

        let leave = Event::Member {
            kind: MemberEventKind::Leave,
            members: vec![member("a", "web")],
        };
        assert_eq!(
            web_only().select(&leave),
            None,
            "filter does not select leave"
        );
    }

    #[test]
    fn user_events_ignore_the_tag_filter() {
        let event = Event::User(UserEvent {
            ltime: 1,
            name: "deploy".into(),
            payload: vec![],
            coalesce: false,
            origin: "o".into(),
        });
        assert_eq!(web_only().select(&event), Some(event));
    }

    #[test]
    fn validation_names_the_handler() {
        let ok = HandlerConfig::new("a", EventFilter::all(), "true");
        assert_eq!(ok.validate(), Ok(()));

        let mut bad = ok.clone();
        bad.runtime = RuntimeConfig::shell("  ");
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "handler \"a\" has an empty command; set command to what it should run"
        );
        let mut bad = ok.clone();
        bad.timeout = Duration::ZERO;
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::ZeroTimeout { .. })
        ));
        let mut bad = ok.clone();
        bad.env.insert("A=B".into(), "x".into());
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::BadEnvName { .. })
        ));
        let mut bad = ok.clone();
        bad.coalesce_quiet = Some(Duration::from_secs(1));
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::QuietWithoutCoalesce { .. })
        ));
        bad.coalesce_like_serf();
        assert_eq!(bad.validate(), Ok(()));
        bad.coalesce_quiet = Some(Duration::ZERO);
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::ZeroCoalesceQuiet { .. })
        ));
        let mut bad = ok.clone();
        bad.serial_group = Some(" ".into());
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::EmptySerialGroup { .. })
        ));
        let mut bad = ok.clone();
        bad.name = String::new();
        assert!(matches!(bad.validate(), Err(ConfigError::EmptyName { .. })));

        assert_eq!(
            validate_all(&[ok.clone(), ok.clone()]),
            Err(ConfigError::DuplicateName { name: "a".into() })
        );
    }

    #[test]
    fn a_runtime_is_shown_as_its_command_and_equal_only_to_the_same_runtime() {
        let shell = RuntimeConfig::shell("./lb.sh");
        assert_eq!(shell.to_string(), "./lb.sh");
        assert_eq!(shell.command(), Some("./lb.sh"));
        assert_eq!(shell, RuntimeConfig::shell("./lb.sh"));
        assert_ne!(shell, RuntimeConfig::shell("./lb.sh --other"));

        let runtime: Arc<dyn Runtime> = Arc::new(Shell {
            command: "true".into(),
        });
        let custom = |runtime: &Arc<dyn Runtime>| RuntimeConfig::Custom {
            label: "built-in".into(),
            runtime: runtime.clone(),
        };
        assert_eq!(custom(&runtime).to_string(), "built-in");
        assert_eq!(custom(&runtime).command(), None);
        assert_eq!(custom(&runtime), custom(&runtime));
        let twin: Arc<dyn Runtime> = Arc::new(Shell {
            command: "true".into(),
        });
        assert_ne!(custom(&runtime), custom(&twin), "another runtime");
        assert_ne!(custom(&runtime), RuntimeConfig::shell("built-in"));
    }
}
