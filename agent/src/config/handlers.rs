//! Handler settings: `--event-handler [FILTER=]COMMAND` flags (Serf's syntax) and
//! `[[handler]]` tables in the config file, turned into [`HandlerConfig`]s.
//!
//! A table picks its runtime by its key: `command` (a shell command), `template` (a template
//! rendered into `destination`), `wasm` (a WASI module, docs/wasm.md) or `docker` (an app's
//! container deploys, [`super::docker`]); exactly one. Plugin manifests use the same tables
//! ([`HandlerTable::to_config`], with the plugin's folder, name and settings as [`TableContext`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rumor_handlers::template::{TemplateSource, Wait};
use rumor_handlers::wasm::WasmConfig;
use rumor_handlers::{
    EventFilter, HandlerConfig, HandlerSpec, RuntimeConfig, Setting, TemplateConfig,
};
use serde::Deserialize;
use toml::Spanned;

use super::wasm_table::{self, DirTable, Size, WASM_KEYS, WasmKeys};
use super::{ConfigError, ConfigFile, parse_duration};

/// The keys that pick a handler's runtime; a table sets exactly one.
const KIND_KEYS: [&str; 4] = ["command", "template", "wasm", "docker"];

/// One `[[handler]]` table (also a plugin's). Exactly one of `command`, `template`, `wasm` and `docker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandlerTable {
    /// Shown in logs and `rumor info` [default: handler-N].
    name: Option<String>,
    /// Serf filters (`member-join`, `user:deploy`, `query:uptime`, `*`, ...) [default: all;
    /// for a template: the member events].
    #[serde(default)]
    events: Vec<String>,
    /// Run as `/bin/sh -c COMMAND`.
    command: Option<String>,
    /// Render this template file (relative: to the config file's folder, or the plugin's).
    template: Option<String>,
    /// Run this WASI module, `.wasm` or `.wat` (relative: to the config file's folder, or the
    /// plugin's).
    wasm: Option<String>,
    /// A WASM run's fuel [default: DEFAULT_FUEL].
    fuel: Option<u64>,
    /// A WASM run's linear memory, e.g. "16MiB" [default: 16MiB].
    memory: Option<Size>,
    /// A WASM run's stdout, and stderr, e.g. "64KiB" [default and most: 64KiB].
    output: Option<Size>,
    /// Directories a WASM module may open: `[{ host = "/srv/out", guest = "/out",
    /// writable = true }]` [default: none].
    #[serde(default)]
    dirs: Vec<DirTable>,
    /// Names of the agent's environment variables a WASM module gets [default: none].
    #[serde(default)]
    host_env: Vec<String>,
    /// Roll an app's container on `deploy` events: `{ app = "web", container_port = 8080, … }`.
    docker: Option<super::docker::DockerTable>,
    /// The file a template writes.
    destination: Option<String>,
    /// Render only the block between `# BEGIN NAME` and `# END NAME` of the destination.
    block: Option<String>,
    /// Run on the candidate file (`{{candidate}}`, `$RUMOR_CANDIDATE`) before it replaces the
    /// destination.
    check: Option<String>,
    /// Run when the destination changed.
    reload: Option<String>,
    /// Also reload on the first render after start, changed or not [default: true].
    reload_on_start: Option<bool>,
    /// Quiescence: `{ min = "500ms", max = "5s" }`.
    wait: Option<WaitTable>,
    /// The destination's mode, e.g. "0640" [default: the existing file's, else 0644].
    perms: Option<Perms>,
    /// The destination's owner, `user[:group]` [default: the existing file's].
    owner: Option<String>,
    /// Keep the previous destination as DESTINATION.bak [default: false].
    backup: Option<bool>,
    /// Run only for event members whose tags have these exact values.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// e.g. "30s" [default: 60s].
    timeout: Option<String>,
    /// Coalescing window, e.g. "2s", or "serf" for Serf's timing (a 3s window that closes
    /// after 1s without events) [default: none].
    coalesce: Option<String>,
    /// With `coalesce`: run the held events once none came for this long, e.g. "1s".
    coalesce_quiet: Option<String>,
    /// Extra environment variables for the command.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Handlers naming the same group never run at the same time, as all of Serf's.
    serial_group: Option<String>,
}

/// The `coalesce` value that asks for Serf's coalescing timing.
pub const SERF_COALESCE: &str = "serf";
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitTable {
    min: String,
    /// [default: 4 × min, as consul-template]
    max: Option<String>,
}

/// A mode as a string of octal digits ("0640") or a TOML integer (`0o640`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Perms {
    Text(String),
    Number(u32),
}

/// The template-only keys, for the error when a command handler sets one.
const TEMPLATE_KEYS: [&str; 9] = [
    "destination",
    "block",
    "check",
    "reload",
    "reload_on_start",
    "wait",
    "perms",
    "owner",
    "backup",
];

/// Where a table comes from: what relative paths are relative to, whose templates they are,
/// and the settings templates see.
pub(crate) struct TableContext<'a> {
    /// Relative template paths start here.
    pub base_dir: &'a Path,
    /// `config`, or the plugin's name.
    pub scope: &'a str,
    /// Directories a template's `{% include %}` searches after its own.
    pub include_dirs: Vec<PathBuf>,
    pub settings: BTreeMap<String, Setting>,
    /// Relative path → SHA-256 of the files shipped with the table (a plugin's `[files]`): a
    /// WASM module listed here is checked against it at every compile.
    pub checksums: BTreeMap<String, String>,
}

impl HandlerTable {
    /// The handler this table describes; `default_name` when it has no name.
    pub(crate) fn to_config(
        &self,
        default_name: String,
        context: &TableContext<'_>,
    ) -> Result<HandlerConfig, ConfigError> {
        let t = self;
        let name = t.name.clone().unwrap_or(default_name);
        let invalid =
            |message: String| ConfigError::Handler(format!("handler {name:?}: {message}"));
        let runtime = self.runtime(&name, context)?;
        let filter = if !t.events.is_empty() {
            EventFilter::parse_items(&t.events).map_err(|e| invalid(e.to_string()))?
        } else if runtime.template().is_some() {
            EventFilter::parse("member-join,member-leave,member-failed,member-update,member-reap")
                .expect("the member events are a valid filter")
        } else {
            EventFilter::all()
        };
        let mut handler = HandlerConfig::with_runtime(name.clone(), filter, runtime);
        handler.tags_filter = t.tags.clone();
        handler.env = t.env.clone();
        handler.serial_group = t.serial_group.clone();
        if let Some(timeout) = &t.timeout {
            handler.timeout = parse_duration("handler timeout", timeout)?;
        }
        match t.coalesce.as_deref() {
            Some(SERF_COALESCE) => handler.coalesce_like_serf(),
            Some(window) => handler.coalesce = Some(parse_duration("handler coalesce", window)?),
            None => {}
        }
        if let Some(quiet) = &t.coalesce_quiet {
            handler.coalesce_quiet = Some(parse_duration("handler coalesce_quiet", quiet)?);
        }
        handler
            .validate()
            .map_err(|e| ConfigError::Handler(e.to_string()))?;
        Ok(handler)
    }

    /// The runtime the table's kind key selects, with its settings.
    fn runtime(
        &self,
        name: &str,
        context: &TableContext<'_>,
    ) -> Result<RuntimeConfig, ConfigError> {
        let invalid =
            |message: String| ConfigError::Handler(format!("handler {name:?}: {message}"));
        let set: Vec<&str> = KIND_KEYS
            .into_iter()
            .filter(|key| match *key {
                "command" => self.command.is_some(),
                "template" => self.template.is_some(),
                "wasm" => self.wasm.is_some(),
                _ => self.docker.is_some(),
            })
            .collect();
        let kind = match set.as_slice() {
            [kind] => *kind,
            [] => {
                return Err(invalid(format!(
                    "set one of {}: `command` runs a shell command, `template` renders a file, \
                     `wasm` runs a WASI module, `docker` deploys an app's container",
                    KIND_KEYS.map(|k| format!("`{k}`")).join(", ")
                )));
            }
            several => {
                return Err(invalid(format!(
                    "sets both {}: a handler runs one kind; split it into one [[handler]] per kind",
                    several
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
        };
        if kind != "template"
            && let Some(key) = self.template_key_set()
        {
            return Err(invalid(format!(
                "`{key}` is a template setting, but this handler runs {}; remove it, or use \
                 `template` instead of `{kind}`",
                match kind {
                    "wasm" => "a module",
                    "docker" => "container deploys",
                    _ => "a command",
                }
            )));
        }
        if kind != "wasm"
            && let Some(key) = self.wasm_key_set()
        {
            return Err(invalid(format!(
                "`{key}` is a WASM setting, but this handler does not run a module; remove it, \
                 or use `wasm` instead of `{kind}`"
            )));
        }
        if let Some(docker) = &self.docker {
            return docker
                .to_config()
                .map(|d| RuntimeConfig::Docker(Box::new(d)))
                .map_err(invalid);
        }
        match (&self.command, &self.template, &self.wasm) {
            (Some(command), _, _) => Ok(RuntimeConfig::shell(command.clone())),
            (_, Some(template), _) => self
                .template_config(template, context)
                .map(|t| RuntimeConfig::Template(Box::new(t)))
                .map_err(invalid),
            (_, _, Some(module)) => self
                .wasm_config(module, context)
                .map(|w| RuntimeConfig::Wasm(Box::new(w)))
                .map_err(invalid),
            _ => unreachable!("exactly one kind key is set"),
        }
    }

    fn wasm_key_set(&self) -> Option<&'static str> {
        let set = [
            self.fuel.is_some(),
            self.memory.is_some(),
            self.output.is_some(),
            !self.dirs.is_empty(),
            !self.host_env.is_empty(),
        ];
        WASM_KEYS
            .into_iter()
            .zip(set)
            .find_map(|(key, set)| set.then_some(key))
    }

    fn wasm_config(&self, module: &str, context: &TableContext<'_>) -> Result<WasmConfig, String> {
        wasm_table::config(
            module,
            &WasmKeys {
                fuel: self.fuel,
                memory: self.memory.as_ref(),
                output: self.output.as_ref(),
                dirs: &self.dirs,
                host_env: &self.host_env,
            },
            context,
        )
    }

    fn template_key_set(&self) -> Option<&'static str> {
        let set = [
            self.destination.is_some(),
            self.block.is_some(),
            self.check.is_some(),
            self.reload.is_some(),
            self.reload_on_start.is_some(),
            self.wait.is_some(),
            self.perms.is_some(),
            self.owner.is_some(),
            self.backup.is_some(),
        ];
        TEMPLATE_KEYS
            .into_iter()
            .zip(set)
            .find_map(|(key, set)| set.then_some(key))
    }

    fn template_config(
        &self,
        template: &str,
        context: &TableContext<'_>,
    ) -> Result<TemplateConfig, String> {
        let destination = self
            .destination
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .ok_or("a template handler needs `destination`, the file it writes")?;
        let path = context.base_dir.join(template);
        let source =
            TemplateSource::read(&path, context.include_dirs.clone()).map_err(|e| e.to_string())?;
        let wait = self
            .wait
            .as_ref()
            .map(|w| -> Result<Wait, String> {
                let min = parse_duration("wait min", &w.min).map_err(|e| e.to_string())?;
                let max = match &w.max {
                    Some(max) => parse_duration("wait max", max).map_err(|e| e.to_string())?,
                    None => min * 4,
                };
                Wait::new(min, max)
            })
            .transpose()?;
        let perms = self.perms.as_ref().map(parse_perms).transpose()?;
        // An empty optional command or name (a plugin setting left empty) means "none".
        let optional = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let mut config = TemplateConfig::new(source, destination);
        config.block = optional(&self.block);
        config.check = optional(&self.check);
        config.reload = optional(&self.reload);
        config.reload_on_start = self.reload_on_start.unwrap_or(true);
        config.wait = wait.filter(|w| !w.max.is_zero());
        config.perms = perms;
        config.owner = optional(&self.owner);
        config.backup = self.backup.unwrap_or(false);
        config.settings = context.settings.clone();
        config.scope = context.scope.to_string();
        Ok(config)
    }
}

fn parse_perms(perms: &Perms) -> Result<u32, String> {
    match perms {
        Perms::Number(n) if *n <= 0o7777 => Ok(*n),
        Perms::Text(text) => u32::from_str_radix(text.trim(), 8)
            .ok()
            .filter(|n| *n <= 0o7777)
            .ok_or_else(|| format!("perms {text:?} is not an octal file mode such as \"0640\"")),
        Perms::Number(n) => Err(format!(
            "perms {n} is not a file mode; write it in octal, as \"0640\" or 0o640"
        )),
    }
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

/// Handlers from the file's `[[handler]]` tables; errors name the file and line. Relative
/// template paths are relative to the file's folder.
pub(super) fn from_file(file: &ConfigFile) -> Result<Vec<HandlerConfig>, ConfigError> {
    let Some(tables) = &file.values.handler else {
        return Ok(Vec::new());
    };
    let base_dir = match file.path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let context = TableContext {
        base_dir: &base_dir,
        scope: "config",
        include_dirs: Vec::new(),
        settings: BTreeMap::new(),
        checksums: BTreeMap::new(),
    };
    tables
        .iter()
        .enumerate()
        .map(|(i, table)| from_table(i, table, &context).map_err(|e| file.locate(table.span(), e)))
        .collect()
}

fn from_table(
    index: usize,
    table: &Spanned<HandlerTable>,
    context: &TableContext<'_>,
) -> Result<HandlerConfig, ConfigError> {
    table
        .get_ref()
        .to_config(format!("handler-{}", index + 1), context)
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
        assert_eq!(handlers[0].runtime.command(), Some("./lb.sh"));
        assert_eq!(handlers[1].runtime.command(), Some("./all.sh"));
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

[[handler]]
name = "hosts"
command = "./hosts.sh"
coalesce = "serf"
serial_group = "serf"

[[handler]]
name = "quiet"
command = "./q.sh"
coalesce = "5s"
coalesce_quiet = "500ms"
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
        assert_eq!(handlers[1].coalesce, None, "no coalescing by default");
        assert_eq!(handlers[2].coalesce, Some(Duration::from_secs(3)));
        assert_eq!(handlers[2].coalesce_quiet, Some(Duration::from_secs(1)));
        assert_eq!(handlers[2].serial_group.as_deref(), Some("serf"));
        assert_eq!(handlers[1].serial_group, None);
        assert_eq!(handlers[3].coalesce, Some(Duration::from_secs(5)));
        assert_eq!(handlers[3].coalesce_quiet, Some(Duration::from_millis(500)));
        let err = from_file(&file(
            "[[handler]]\ncommand = \"x\"\ncoalesce_quiet = \"1s\"\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("coalesce_quiet without coalesce"), "{err}");
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
    fn a_table_runs_exactly_one_kind() {
        let f = file("[[handler]]\nname = \"x\"\ncommand = \"a\"\ntemplate = \"t.j2\"\n");
        let err = from_file(&f).unwrap_err().to_string();
        assert!(
            err.contains("handler \"x\": sets both `command` and `template`"),
            "{err}"
        );
        let f = file("[[handler]]\nname = \"x\"\nevents = [\"user\"]\n");
        let err = from_file(&f).unwrap_err().to_string();
        assert!(
            err.contains("set one of `command`, `template`, `wasm`"),
            "{err}"
        );
        let f = file("[[handler]]\ncommand = \"a\"\ndestination = \"/tmp/x\"\n");
        let err = from_file(&f).unwrap_err().to_string();
        assert!(err.contains("`destination` is a template setting"), "{err}");
    }

    #[test]
    fn template_tables_carry_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lb.j2"), "{{ members | length }}\n").unwrap();
        let path = dir.path().join("rumor.toml");
        let text = r#"
[[handler]]
name = "lb"
template = "lb.j2"
destination = "/etc/lb.conf"
check = "lb -t {{candidate}}"
reload = "lb reload"
reload_on_start = false
wait = { min = "200ms", max = "2s" }
perms = "0640"
owner = "root:root"
backup = true
"#;
        let f = ConfigFile::parse(&path, text.to_string()).unwrap();
        let handlers = from_file(&f).unwrap();
        let t = handlers[0].runtime.template().expect("a template handler");
        assert_eq!(t.source.path, dir.path().join("lb.j2"));
        assert_eq!(t.destination, Path::new("/etc/lb.conf"));
        assert_eq!(t.check.as_deref(), Some("lb -t {{candidate}}"));
        assert_eq!(t.reload.as_deref(), Some("lb reload"));
        assert!(!t.reload_on_start && t.backup);
        assert_eq!(t.perms, Some(0o640));
        assert_eq!(t.owner.as_deref(), Some("root:root"));
        let wait = t.wait.unwrap();
        assert_eq!(
            (wait.min, wait.max),
            (Duration::from_millis(200), Duration::from_secs(2))
        );
        assert!(handlers[0].filter.to_string().contains("member-join"));

        let broken = ConfigFile::parse(
            &path,
            "[[handler]]\ntemplate = \"missing.j2\"\ndestination = \"/x\"\n".into(),
        )
        .unwrap();
        let err = from_file(&broken).unwrap_err().to_string();
        assert!(
            err.contains("missing.j2") && err.contains("cannot read"),
            "{err}"
        );
        std::fs::write(dir.path().join("bad.j2"), "{% for %}").unwrap();
        let bad = ConfigFile::parse(
            &path,
            "[[handler]]\ntemplate = \"bad.j2\"\ndestination = \"/x\"\n".into(),
        )
        .unwrap();
        let err = from_file(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.j2") && err.contains("syntax"), "{err}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let a = from_flags(&["./a".into()]).unwrap();
        let f = file("[[handler]]\nname = \"event-handler-1\"\ncommand = \"b\"\n");
        let err = combine(a, from_file(&f).unwrap()).unwrap_err().to_string();
        assert!(err.contains("event-handler-1"), "{err}");
    }
}
