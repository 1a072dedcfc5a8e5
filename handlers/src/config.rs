//! One handler's settings ([`HandlerConfig`]), their validation, and which events (and which
//! members of a member event) a handler is given.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;

use crate::event::{Event, Tags};
use crate::filter::{EventFilter, HandlerSpec};

/// A run that takes longer than this is killed, unless the handler sets its own timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A shell handler: which events it runs for and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    /// Unique among the handlers; shown in logs and `rumor info`.
    pub name: String,
    /// Which events run it.
    pub filter: EventFilter,
    /// Run as `/bin/sh -c COMMAND`.
    pub command: String,
    /// Run only for members whose tags hold every one of these key/value pairs (exact values).
    /// A member event keeps only the matching members, and is skipped when none match. User
    /// events and queries have no member and are not filtered by tags.
    pub tags_filter: BTreeMap<String, String>,
    /// After this long the run's process group is killed.
    pub timeout: Duration,
    /// Coalescing window: member events and coalescable user events arriving within it are
    /// merged into fewer runs (see [`crate::coalesce`]). `None`: every event runs on its own.
    pub coalesce: Option<Duration>,
    /// Extra environment for the command, on top of the agent's and the contract's.
    pub env: BTreeMap<String, String>,
}

impl HandlerConfig {
    /// A handler with the default settings: no tag filter, [`DEFAULT_TIMEOUT`], no coalescing,
    /// no extra environment.
    pub fn new(
        name: impl Into<String>,
        filter: EventFilter,
        command: impl Into<String>,
    ) -> HandlerConfig {
        HandlerConfig {
            name: name.into(),
            filter,
            command: command.into(),
            tags_filter: BTreeMap::new(),
            timeout: DEFAULT_TIMEOUT,
            coalesce: None,
            env: BTreeMap::new(),
        }
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
                command: self.command.clone(),
            });
        }
        if self.command.trim().is_empty() {
            return Err(ConfigError::EmptyCommand { name: name() });
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout { name: name() });
        }
        if self.coalesce.is_some_and(|window| window.is_zero()) {
            return Err(ConfigError::ZeroCoalesce { name: name() });
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
        "handler {name:?}: env variable name {key:?} is invalid; it must be non-empty and hold no '=' or NUL"
    )]
    BadEnvName { name: String, key: String },
    #[error("handler {name:?}: the value of env variable {key:?} holds a NUL byte")]
    BadEnvValue { name: String, key: String },
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
        bad.command = "  ".into();
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
        bad.name = String::new();
        assert!(matches!(bad.validate(), Err(ConfigError::EmptyName { .. })));

        assert_eq!(
            validate_all(&[ok.clone(), ok.clone()]),
            Err(ConfigError::DuplicateName { name: "a".into() })
        );
    }
}
