//! Handler settings: `--event-handler [FILTER=]COMMAND` flags (Serf's syntax) and
//! `[[handler]]` tables in the config file, turned into [`HandlerConfig`]s.

use std::collections::{BTreeMap, BTreeSet};

use rumor_handlers::{EventFilter, HandlerConfig, HandlerSpec};
use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, ConfigFile, parse_duration};

/// One `[[handler]]` table. Only `command` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HandlerTable {
    /// Shown in logs and `rumor info` [default: handler-N].
    name: Option<String>,
    /// Serf filters (`member-join`, `user:deploy`, `query:uptime`, `*`, ...) [default: all].
    #[serde(default)]
    events: Vec<String>,
    /// Run as `/bin/sh -c COMMAND`.
    command: String,
    /// Run only for event members whose tags have these exact values.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// e.g. "30s" [default: 60s].
    timeout: Option<String>,
    /// Coalescing window, e.g. "2s" [default: none].
    coalesce: Option<String>,
    /// Extra environment variables for the command.
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// Handlers from `--event-handler` values, named `event-handler-1`, `-2`, ...
pub(super) fn from_flags(values: &[String]) -> Result<Vec<HandlerConfig>, ConfigError> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let spec = HandlerSpec::parse_cli(value)
                .map_err(|e| ConfigError::Handler(format!("--event-handler {value:?}: {e}")))?;
            Ok(HandlerConfig::from_spec(
                format!("event-handler-{}", i + 1),
                spec,
            ))
        })
        .collect()
}

/// Handlers from the file's `[[handler]]` tables; errors name the file and line.
pub(super) fn from_file(file: &ConfigFile) -> Result<Vec<HandlerConfig>, ConfigError> {
    let Some(tables) = &file.values.handler else {
        return Ok(Vec::new());
    };
    tables
        .iter()
        .enumerate()
        .map(|(i, table)| from_table(i, table).map_err(|e| file.locate(table.span(), e)))
        .collect()
}

fn from_table(index: usize, table: &Spanned<HandlerTable>) -> Result<HandlerConfig, ConfigError> {
    let t = table.get_ref();
    let name = t
        .name
        .clone()
        .unwrap_or_else(|| format!("handler-{}", index + 1));
    let filter = if t.events.is_empty() {
        EventFilter::all()
    } else {
        EventFilter::parse_items(&t.events)
            .map_err(|e| ConfigError::Handler(format!("handler {name:?}: {e}")))?
    };
    let mut handler = HandlerConfig::new(name, filter, t.command.clone());
    handler.tags_filter = t.tags.clone();
    handler.env = t.env.clone();
    if let Some(timeout) = &t.timeout {
        handler.timeout = parse_duration("handler timeout", timeout)?;
    }
    if let Some(window) = &t.coalesce {
        handler.coalesce = Some(parse_duration("handler coalesce", window)?);
    }
    handler
        .validate()
        .map_err(|e| ConfigError::Handler(e.to_string()))?;
    Ok(handler)
}

/// Flags first, then the file's tables; names must be unique.
pub(super) fn combine(
    flags: Vec<HandlerConfig>,
    file: Vec<HandlerConfig>,
) -> Result<Vec<HandlerConfig>, ConfigError> {
    let mut seen = BTreeSet::new();
    let all: Vec<HandlerConfig> = flags.into_iter().chain(file).collect();
    for h in &all {
        if !seen.insert(h.name.as_str()) {
            return Err(ConfigError::Handler(format!(
                "two handlers are named {:?}: give each [[handler]] a unique name",
                h.name
            )));
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("/etc/rumor/rumor.toml"), text.to_string()).unwrap()
    }

    #[test]
    fn flags_use_serfs_syntax_and_typos_name_the_value() {
        let handlers =
            from_flags(&["member-join,member-leave=./lb.sh".into(), "./all.sh".into()]).unwrap();
        assert_eq!(handlers[0].name, "event-handler-1");
        assert_eq!(handlers[0].command, "./lb.sh");
        assert_eq!(handlers[1].command, "./all.sh");
        let err = from_flags(&["member-jion=x".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("member-jion"), "{err}");
    }

    #[test]
    fn tables_carry_every_setting() {
        let f = file(
            r#"
[[handler]]
name = "deploy"
events = ["user:deploy"]
command = "./deploy.sh"
tags = { role = "web" }
timeout = "5m"
coalesce = "2s"
env = { MODE = "prod" }

[[handler]]
command = "./log.sh"
"#,
        );
        let handlers = from_file(&f).unwrap();
        let deploy = &handlers[0];
        assert_eq!(deploy.name, "deploy");
        assert_eq!(deploy.timeout, Duration::from_secs(300));
        assert_eq!(deploy.coalesce, Some(Duration::from_secs(2)));
        assert_eq!(deploy.tags_filter["role"], "web");
        assert_eq!(deploy.env["MODE"], "prod");
        assert_eq!(handlers[1].name, "handler-2");
        assert_eq!(handlers[1].filter, EventFilter::all());
    }

    #[test]
    fn table_errors_name_file_and_line() {
        let f = file("node = \"a\"\n\n[[handler]]\nevents = [\"member-jion\"]\ncommand = \"x\"\n");
        let err = from_file(&f).unwrap_err().to_string();
        assert!(err.starts_with("/etc/rumor/rumor.toml:3:"), "{err}");
        assert!(err.contains("member-jion"), "{err}");
        let err = ConfigFile::parse(Path::new("/f.toml"), "[[handler]]\ncomand = \"x\"\n".into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("comand") && err.starts_with("/f.toml:"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let a = from_flags(&["./a".into()]).unwrap();
        let f = file("[[handler]]\nname = \"event-handler-1\"\ncommand = \"b\"\n");
        let err = combine(a, from_file(&f).unwrap()).unwrap_err().to_string();
        assert!(err.contains("event-handler-1"), "{err}");
    }
}
