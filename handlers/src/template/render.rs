//! Rendering: a template's text (minijinja, Jinja2 syntax) against the cluster state.
//!
//! # What a template sees
//!
//! | name | what |
//! | --- | --- |
//! | `members` | every member the agent knows, itself included, sorted by name: `name`, `address`, `port`, `status` (`alive`, `leaving`, `left`, `failed`), `tags`, `generation`, `passing` (alive and every `health_*` tag `passing`) |
//! | `node` | the local member, the same fields (`address` and the rest once the cluster has started) |
//! | `settings` | the plugin's settings (empty for a template of the config file) |
//!
//! Filters besides minijinja's own (`sort(attribute="name")`, `map`, `join`, `length`, ...):
//!
//! | filter | what |
//! | --- | --- |
//! | `members \| alive` | the members whose status is `alive` |
//! | `members \| passing` | the alive members whose health checks all pass (`health_*` tags, docs/health.md): where traffic should go |
//! | `members \| with_status("failed")` | the members with that status |
//! | `members \| tagged("role=web")` | the members whose tags match a selector: `k=v` (that value), `k` (the tag is set), several joined by `,` (all must match) |
//! | `m \| tag_or("port", 80)` | the member's tag `port`, or `80` when it has none (or the key is empty) |
//! | `address \| hostport(port)` | `10.0.0.5:80`, or `[fd00::5]:80` for IPv6 |
//! | `members \| endpoints("port", 80)` | each member's `hostport`, its port from tag `port` (or `80`): a list to `join` |
//!
//! # Why strict
//!
//! An undefined variable (a typo, a setting that does not exist, a tag a member lacks) is an
//! error, not an empty string: an empty server address in a load balancer's config is worse than
//! the previous config, which an error keeps in place.
//!
//! Whitespace: a block tag's line leaves no blank line behind (`trim_blocks`, `lstrip_blocks`),
//! and the template's final newline is kept, as config files want. Nothing is HTML-escaped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior};
use serde::Serialize;
use thiserror::Error;

use super::Setting;
use crate::contract::LocalNode;
use crate::members::{Member, MemberStatus};

/// A template's text and where its `{% include %}`s are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// The file it was read from, for error messages (`haproxy.cfg.j2:12: ...`).
    pub path: PathBuf,
    /// The template itself, read when the configuration was loaded.
    pub text: String,
    /// Directories `{% include "NAME" %}` searches, in order (a plugin's folder; the template's
    /// own directory).
    pub include_dirs: Vec<PathBuf>,
}

impl TemplateSource {
    /// Reads `path`; includes are looked up next to it, then in `include_dirs`.
    pub fn read(path: &Path, include_dirs: Vec<PathBuf>) -> Result<TemplateSource, RenderError> {
        let text = std::fs::read_to_string(path).map_err(|e| RenderError {
            template: path.display().to_string(),
            message: format!("cannot read the template: {e}"),
        })?;
        let mut dirs: Vec<PathBuf> = path.parent().map(Path::to_path_buf).into_iter().collect();
        for dir in include_dirs {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        Ok(TemplateSource {
            path: path.to_path_buf(),
            text,
            include_dirs: dirs,
        })
    }

    /// The name errors give the template: its file name.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// A template that failed to parse or to render. The message names the template and line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("template {template}: {message}")]
pub struct RenderError {
    pub template: String,
    pub message: String,
}

/// A parsed template, ready to render again and again.
pub struct Compiled {
    env: Environment<'static>,
    name: String,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("name", &self.name)
            .finish()
    }
}

/// What a template renders against.
pub struct Data<'a> {
    pub members: &'a [Member],
    pub local: &'a LocalNode,
    pub settings: &'a BTreeMap<String, Setting>,
}

/// The local node as `node`: its member entry when the member list has it.
#[derive(Serialize)]
struct NodeView<'a> {
    name: &'a str,
    tags: &'a crate::event::Tags,
    #[serde(flatten)]
    member: Option<MemberFields<'a>>,
}

#[derive(Serialize)]
struct MemberFields<'a> {
    address: &'a IpAddr,
    port: u16,
    status: MemberStatus,
    generation: u64,
    passing: bool,
}

impl Compiled {
    /// Parses the template (and checks nothing else: includes are read when rendering).
    pub fn new(source: &TemplateSource) -> Result<Compiled, RenderError> {
        let name = source.name();
        let mut env = environment(source.include_dirs.clone());
        env.add_template_owned(name.clone(), source.text.clone())
            .map_err(|e| error(&name, &e))?;
        Ok(Compiled { env, name })
    }

    /// Renders the template against `data`.
    pub fn render(&self, data: &Data<'_>) -> Result<String, RenderError> {
        let node = NodeView {
            name: &data.local.name,
            tags: &data.local.tags,
            member: data
                .members
                .iter()
                .find(|m| m.name == data.local.name)
                .map(|m| MemberFields {
                    address: &m.address,
                    port: m.port,
                    status: m.status,
                    generation: m.generation,
                    passing: m.passing,
                }),
        };
        let context = minijinja::context! {
            members => Value::from(Serde(data.members)),
            node => Value::from(Serde(&node)),
            settings => Value::from(Serde(data.settings)),
        };
        let template = self
            .env
            .get_template(&self.name)
            .map_err(|e| error(&self.name, &e))?;
        template.render(context).map_err(|e| error(&self.name, &e))
    }
}

fn error(name: &str, e: &minijinja::Error) -> RenderError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if e.kind() == ErrorKind::UndefinedError {
        message.push_str(
            " (a variable, attribute or tag that does not exist; test with `is defined` or \
             use `tag_or` for optional tags)",
        );
    }
    RenderError {
        template: name.to_string(),
        message,
    }
}

/// The environment every template renders in: strict, config-file whitespace, rumor's filters,
/// includes from `include_dirs`.
fn environment(include_dirs: Vec<PathBuf>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_loader(move |name| load_include(&include_dirs, name));
    env.add_filter("alive", |members: Vec<Value>| {
        with_status(members, MemberStatus::Alive.as_str())
    });
    env.add_filter("passing", passing);
    env.add_filter("with_status", |members: Vec<Value>, status: String| {
        with_status(members, &status)
    });
    env.add_filter("tagged", tagged);
    env.add_filter("tag_or", tag_or);
    env.add_filter("hostport", hostport);
    env.add_filter("endpoints", endpoints);
    env
}

/// `{% include "NAME" %}`: a relative path without `..`, found in the first directory that has
/// it.
fn load_include(dirs: &[PathBuf], name: &str) -> Result<Option<String>, minijinja::Error> {
    let relative = Path::new(name);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "cannot include {name:?}: give a path relative to the template's folder, without '..'"
            ),
        ));
    }
    for dir in dirs {
        match std::fs::read_to_string(dir.join(relative)) {
            Ok(text) => return Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("cannot read {}: {e}", dir.join(relative).display()),
                ));
            }
        }
    }
    Ok(None)
}

fn with_status(members: Vec<Value>, status: &str) -> Result<Vec<Value>, minijinja::Error> {
    let mut kept = Vec::new();
    for member in members {
        if member.get_attr("status")?.as_str() == Some(status) {
            kept.push(member);
        }
    }
    Ok(kept)
}

/// `passing`: the members the agent marked passing (alive, every health check passing).
fn passing(members: Vec<Value>) -> Result<Vec<Value>, minijinja::Error> {
    let mut kept = Vec::new();
    for member in members {
        if member.get_attr("passing")?.is_true() {
            kept.push(member);
        }
    }
    Ok(kept)
}

/// `tagged("role=web,dc=eu")`: the members whose tags match every part of the selector.
fn tagged(members: Vec<Value>, selector: String) -> Result<Vec<Value>, minijinja::Error> {
    let wanted = parse_selector(&selector)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e))?;
    let mut kept = Vec::new();
    for member in members {
        let tags = member.get_attr("tags")?;
        let matches = wanted.iter().all(|(key, value)| {
            let got = tags.get_attr(key).ok().filter(|v| !v.is_undefined());
            match (got, value) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(got), Some(want)) => got.as_str() == Some(want.as_str()),
            }
        });
        if matches {
            kept.push(member);
        }
    }
    Ok(kept)
}

/// A tag selector: `k=v` pairs and bare `k`s, comma-separated. `None` as a value: the tag only
/// has to be set.
pub fn parse_selector(selector: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let parts: Vec<(String, Option<String>)> = selector
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (part.to_string(), None),
        })
        .collect();
    if parts.is_empty() || parts.iter().any(|(k, _)| k.is_empty()) {
        return Err(format!(
            "invalid tag selector {selector:?}: expected KEY=VALUE or KEY, several joined by ',' \
             (e.g. role=web)"
        ));
    }
    Ok(parts)
}

/// `m | tag_or("port", 80)`: the member's tag, or the default when the key is empty or the
/// member lacks the tag.
fn tag_or(member: Value, key: Value, default: Value) -> Result<Value, minijinja::Error> {
    let key = match key.as_str() {
        Some(k) if !k.is_empty() => k.to_string(),
        _ if key.is_none() || key.as_str() == Some("") => return Ok(default),
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tag_or: the tag key must be a string, not {key}"),
            ));
        }
    };
    let value = member.get_attr("tags")?.get_attr(&key)?;
    Ok(if value.is_undefined() { default } else { value })
}

/// `address | hostport(port)`: `IP:PORT`, with brackets for IPv6.
fn hostport(address: String, port: Value) -> Result<String, minijinja::Error> {
    Ok(match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{address}:{port}"),
    })
}

/// `members | endpoints(port_tag, default_port)`: `IP:PORT` of each member.
fn endpoints(
    members: Vec<Value>,
    port_tag: Value,
    default_port: Value,
) -> Result<Vec<String>, minijinja::Error> {
    members
        .into_iter()
        .map(|m| {
            let address = m.get_attr("address")?.to_string();
            let port = tag_or(m, port_tag.clone(), default_port.clone())?;
            hostport(address, port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::members::MemberStatus;

    fn member(name: &str, ip: &str, status: MemberStatus, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            address: ip.parse().unwrap(),
            port: 7946,
            status,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            generation: 1,
            passing: status == MemberStatus::Alive
                && tags
                    .iter()
                    .all(|(k, v)| !k.starts_with("health_") || *v == "passing"),
        }
    }

    fn render(text: &str, settings: &[(&str, Setting)]) -> Result<String, RenderError> {
        let members = vec![
            member(
                "web-2",
                "10.0.0.2",
                MemberStatus::Alive,
                &[
                    ("role", "web"),
                    ("port", "8080"),
                    ("health_http", "critical"),
                ],
            ),
            member("db-1", "10.0.0.9", MemberStatus::Alive, &[("role", "db")]),
            member("web-1", "fd00::1", MemberStatus::Alive, &[("role", "web")]),
            member(
                "web-3",
                "10.0.0.3",
                MemberStatus::Failed,
                &[("role", "web")],
            ),
        ];
        let local = LocalNode {
            name: "db-1".into(),
            tags: [("role".to_string(), "db".to_string())].into(),
        };
        let settings: BTreeMap<String, Setting> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let source = TemplateSource {
            path: "t.j2".into(),
            text: text.into(),
            include_dirs: vec![],
        };
        Compiled::new(&source)?.render(&Data {
            members: &members,
            local: &local,
            settings: &settings,
        })
    }

    #[test]
    fn alive_members_with_a_tag_sorted_by_name() {
        let text = "{% for m in members | alive | tagged(\"role=web\") | sort(attribute=\"name\") %}\n\
                    server {{ m.name }} {{ m.address | hostport(m | tag_or(\"port\", 80)) }}\n\
                    {% endfor %}\n";
        assert_eq!(
            render(text, &[]).unwrap(),
            "server web-1 [fd00::1]:80\nserver web-2 10.0.0.2:8080\n"
        );
    }

    #[test]
    fn node_and_settings_are_there() {
        let text = "{{ node.name }} {{ node.address }} {{ node.tags.role }} {{ settings.port }} {{ settings.on }}\n";
        let out = render(
            text,
            &[
                ("port", Setting::Integer(11211)),
                ("on", Setting::Boolean(true)),
            ],
        )
        .unwrap();
        // Jinja prints booleans the Python way.
        assert_eq!(out, "db-1 10.0.0.9 db 11211 True\n");
    }

    #[test]
    fn undefined_names_are_errors_that_name_the_template() {
        let err = render("x\n{{ settings.nope }}\n", &[]).unwrap_err();
        assert_eq!(err.template, "t.j2");
        assert!(err.message.contains("undefined"), "{err}");
        assert!(err.message.contains("t.j2:2"), "{err}");
        let err = render("{% for m in members %}{{ m.tags.colour }}{% endfor %}", &[]).unwrap_err();
        assert!(err.message.contains("undefined"), "{err}");
        let err = render("{% if %}", &[]).unwrap_err();
        assert!(err.message.contains("syntax"), "{err}");
    }

    #[test]
    fn selectors_take_keys_values_and_lists() {
        let out = render(
            "{{ members | tagged(\"port\") | map(attribute=\"name\") | join(\",\") }}|{{ members | tagged(\"role=web, port=8080\") | length }}|{{ members | with_status(\"failed\") | map(attribute=\"name\") | join }}",
            &[],
        )
        .unwrap();
        assert_eq!(out, "web-2|1|web-3");
        let out = render(
            "{{ members | alive | tagged(\"role=web\") | sort(attribute=\"name\") | endpoints(\"port\", 80) | join(\",\") }}",
            &[],
        )
        .unwrap();
        assert_eq!(out, "[fd00::1]:80,10.0.0.2:8080");
        let err = render("{{ members | tagged(\"=web\") }}", &[]).unwrap_err();
        assert!(err.message.contains("invalid tag selector"), "{err}");
        let out = render(
            "{{ members | passing | map(attribute=\"name\") | join(\",\") }} {{ node.passing }}",
            &[],
        )
        .unwrap();
        assert_eq!(out, "db-1,web-1 True", "web-2 fails a check, web-3 failed");
        let err = render("{{ members | tagged(\"=web\") }}", &[]).unwrap_err();
        assert!(err.message.contains("invalid tag selector"), "{err}");
    }

    #[test]
    fn includes_come_from_the_include_dirs_and_stay_inside_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("servers.j2"),
            "{{ members | length }} members\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("main.j2"),
            "begin\n{% include \"servers.j2\" %}end\n",
        )
        .unwrap();
        let source = TemplateSource::read(&dir.path().join("main.j2"), vec![]).unwrap();
        let local = LocalNode::default();
        let data = Data {
            members: &[],
            local: &local,
            settings: &BTreeMap::new(),
        };
        assert_eq!(
            Compiled::new(&source).unwrap().render(&data).unwrap(),
            "begin\n0 members\nend\n"
        );
        let escape = TemplateSource {
            text: "{% include \"../etc/passwd\" %}".into(),
            ..source
        };
        let err = Compiled::new(&escape).unwrap().render(&data).unwrap_err();
        assert!(err.message.contains("without '..'"), "{err}");
    }
}
