//! Loading a plugin folder: check it (manifest, signature, checksums, settings) and turn its
//! `[[handler]]` tables into handlers, with the settings filled in.
//!
//! Loading is all or nothing: a plugin whose any part fails gives no handler at all, with an
//! error that names the part.

use std::collections::BTreeMap;
use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use rumor_handlers::{HandlerConfig, Setting};

use super::PluginError;
use super::manifest::{MANIFEST, Manifest};
use super::settings::{self, Given, SETTINGS_FILE};
use super::signature::{self, PublicKey};
use super::{check_name, checksum, handler_name};
use crate::config::{HandlerTable, TableContext};
use crate::health::{CheckConfig, CheckTable};

/// A loaded plugin.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub manifest: Manifest,
    /// The values the installation gave (`settings.toml`).
    pub given: Given,
    /// Every setting's value.
    pub settings: BTreeMap<String, Setting>,
    pub handlers: Vec<HandlerConfig>,
    /// Its health checks, named `PLUGIN.NAME`.
    pub checks: Vec<CheckConfig>,
}

/// Loads the plugin in `dir` with the values of its `settings.toml`.
pub fn load(dir: &Path, trusted: &[PublicKey]) -> Result<Loaded, PluginError> {
    let given = read_given(dir)?;
    load_with(dir, trusted, given)
}

/// Loads the plugin in `dir` as if its `settings.toml` held `given`.
pub fn load_with(dir: &Path, trusted: &[PublicKey], given: Given) -> Result<Loaded, PluginError> {
    let (manifest, bytes) = read_manifest(dir)?;
    signature::verify(dir, &bytes, trusted)?;
    checksum::verify(dir, &manifest.files)?;
    let settings = settings::resolve(&manifest.settings, &given)?;
    let (env, values) = filler(dir, &settings);
    let handlers = handlers(dir, &manifest, &settings, &env, &values)?;
    let checks = checks(&manifest, &env, &values)?;
    Ok(Loaded {
        manifest,
        given,
        settings,
        handlers,
        checks,
    })
}

/// The folder's manifest, parsed, and its bytes (what a signature signs).
pub fn read_manifest(dir: &Path) -> Result<(Manifest, Vec<u8>), PluginError> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| {
        PluginError::Manifest(format!(
            "cannot read {}: {e} (a plugin is a folder with a {MANIFEST})",
            path.display()
        ))
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| PluginError::Manifest(format!("{MANIFEST} is not UTF-8")))?;
    Ok((Manifest::parse(text)?, bytes))
}

/// The folder's `settings.toml`, or nothing given.
pub fn read_given(dir: &Path) -> Result<Given, PluginError> {
    let path = dir.join(SETTINGS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map_err(|e| {
            PluginError::Io(format!("{}: {}", path.display(), e.message().trim_end()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Given::new()),
        Err(e) => Err(PluginError::Io(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// What fills in the strings of a plugin's tables: the environment and its values.
fn filler(
    dir: &Path,
    settings: &BTreeMap<String, Setting>,
) -> (Environment<'static>, minijinja::Value) {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    // `{{ settings.path | quote }}`: a value quoted for the shell, whatever it holds.
    env.add_filter("quote", |value: String| {
        format!("'{}'", value.replace('\'', r"'\''"))
    });
    let values = minijinja::context! {
        settings => minijinja::Value::from(minijinja::value::Serde(settings)),
        // Where the plugin is installed, for its scripts.
        plugin_dir => dir.display().to_string(),
        // Left for the check command to fill in.
        candidate => "{{candidate}}",
    };
    (env, values)
}

/// The manifest's handlers, named `PLUGIN/NAME`, their strings rendered with the settings.
fn handlers(
    dir: &Path,
    manifest: &Manifest,
    settings: &BTreeMap<String, Setting>,
    env: &Environment<'_>,
    values: &minijinja::Value,
) -> Result<Vec<HandlerConfig>, PluginError> {
    let context = TableContext {
        base_dir: dir,
        scope: &manifest.name,
        include_dirs: vec![dir.to_path_buf()],
        settings: settings.clone(),
        checksums: manifest.files.clone(),
    };
    let mut out = Vec::new();
    for (i, table) in manifest.handler.iter().enumerate() {
        let local = table
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("handler-{}", i + 1), str::to_string);
        let name = handler_name(&manifest.name, &local);
        let mut table = toml::Value::Table(table.clone());
        fill(&mut table, env, values).map_err(|e| PluginError::Handler {
            handler: name.clone(),
            message: e,
        })?;
        if let toml::Value::Table(t) = &mut table {
            t.insert("name".into(), toml::Value::String(name.clone()));
        }
        let parsed: HandlerTable =
            table
                .try_into()
                .map_err(|e: toml::de::Error| PluginError::Handler {
                    handler: name.clone(),
                    message: e.message().trim_end().to_string(),
                })?;
        let handler =
            parsed
                .to_config(name.clone(), &context)
                .map_err(|e| PluginError::Handler {
                    handler: name.clone(),
                    message: e.to_string(),
                })?;
        out.push(handler);
    }
    Ok(out)
}

/// The manifest's checks, named `PLUGIN.NAME`, their strings rendered with the settings.
fn checks(
    manifest: &Manifest,
    env: &Environment<'_>,
    values: &minijinja::Value,
) -> Result<Vec<CheckConfig>, PluginError> {
    let mut out = Vec::new();
    for (i, table) in manifest.check.iter().enumerate() {
        let local = table
            .get("name")
            .and_then(toml::Value::as_str)
            .map_or_else(|| format!("check-{}", i + 1), str::to_string);
        let name = check_name(&manifest.name, &local);
        let invalid = |e: String| PluginError::Check(format!("check {name:?}: {e}"));
        let mut table = toml::Value::Table(table.clone());
        fill(&mut table, env, values).map_err(invalid)?;
        let parsed: CheckTable = table
            .try_into()
            .map_err(|e: toml::de::Error| invalid(e.message().trim_end().to_string()))?;
        out.push(
            parsed
                .to_config(Some(name.clone()))
                .map_err(PluginError::Check)?,
        );
    }
    Ok(out)
}

/// Renders every string in `value` that holds a template tag.
fn fill(
    value: &mut toml::Value,
    env: &Environment<'_>,
    values: &minijinja::Value,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) if s.contains("{{") || s.contains("{%") => {
            *s = env
                .render_str(s, values.clone())
                .map_err(|e| format!("{s:?}: {e} (settings.NAME names a setting of the plugin)"))?;
        }
        toml::Value::Array(items) => {
            for item in items {
                fill(item, env, values)?;
            }
        }
        toml::Value::Table(table) => {
            for (_, item) in table.iter_mut() {
                fill(item, env, values)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plugin::checksum::hash_folder;

    /// A plugin folder with `manifest` (whose `[files]` is filled in) and `files`.
    pub(crate) fn folder(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            std::fs::write(dir.path().join(path), text).unwrap();
        }
        let mut text = manifest.to_string();
        text.push_str("\n[files]\n");
        for (path, hash) in hash_folder(dir.path()).unwrap() {
            text.push_str(&format!("{path:?} = {hash:?}\n"));
        }
        std::fs::write(dir.path().join(MANIFEST), text).unwrap();
        dir
    }

    const MANIFEST_TEXT: &str = r#"
name = "demo"
version = "1.0.0"
[settings.out]
type = "path"
required = true
[settings.port]
type = "integer"
default = 11211
[[handler]]
name = "list"
template = "list.j2"
destination = "{{ settings.out }}/list"
check = "test -s {{candidate}} {{ settings.out | quote }}"
"#;

    #[test]
    fn settings_fill_the_handlers() {
        let dir = folder(MANIFEST_TEXT, &[("list.j2", "{{ settings.port }}\n")]);
        let mut given = Given::new();
        given.insert("out".into(), toml::Value::String("/srv/lists".into()));
        let loaded = load_with(dir.path(), &[], given).unwrap();
        let handler = &loaded.handlers[0];
        assert_eq!(handler.name, "demo/list");
        let template = handler.runtime.template().unwrap();
        assert_eq!(template.destination, Path::new("/srv/lists/list"));
        assert_eq!(
            template.check.as_deref(),
            Some("test -s {{candidate}} '/srv/lists'")
        );
        assert_eq!(template.scope, "demo");
        assert_eq!(template.settings["port"], Setting::Integer(11211));
    }

    #[test]
    fn a_plugin_adds_checks_named_after_it() {
        let manifest = format!(
            "{MANIFEST_TEXT}\n[[check]]\nname = \"port\"\ntcp = \"127.0.0.1:{{{{ settings.port }}}}\"\n"
        );
        let dir = folder(&manifest, &[("list.j2", "x")]);
        let mut given = Given::new();
        given.insert("out".into(), toml::Value::String("/srv".into()));
        let loaded = load_with(dir.path(), &[], given.clone()).unwrap();
        assert_eq!(loaded.checks.len(), 1);
        assert_eq!(loaded.checks[0].name, "demo.port");
        assert_eq!(loaded.checks[0].tag(), "health_demo.port");
        assert_eq!(loaded.checks[0].probe.target(), "127.0.0.1:11211");

        let bad = manifest.replace("tcp = ", "http = ");
        let dir = folder(&bad, &[("list.j2", "x")]);
        let err = load_with(dir.path(), &[], given).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid [[check]]: check \"demo.port\"") && err.contains("http://"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_plugin_is_refused_with_what_is_wrong() {
        let dir = folder(MANIFEST_TEXT, &[("list.j2", "x")]);
        let err = load(dir.path(), &[]).unwrap_err().to_string();
        assert!(err.contains("setting \"out\": is required"), "{err}");

        let typo = MANIFEST_TEXT.replace("settings.out }}", "settings.ouT }}");
        let dir = folder(&typo, &[("list.j2", "x")]);
        let mut given = Given::new();
        given.insert("out".into(), toml::Value::String("/srv".into()));
        let err = load_with(dir.path(), &[], given).unwrap_err().to_string();
        assert!(err.starts_with("handler \"demo/list\""), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }
}
