//! `plugin.toml`: what a plugin is (name, version, description, the oldest rumor it runs on),
//! the settings it takes, the handlers it adds, and the SHA-256 of each of its files.
//!
//! ```toml
//! name = "hosts"
//! version = "1.0.0"
//! description = "Keep a block of /etc/hosts listing every alive member"
//! rumor = "0.1.0"                       # the oldest rumor version it runs on
//!
//! [settings.path]
//! type = "path"                         # string, integer, boolean, duration or path
//! default = "/etc/hosts"
//! help = "The hosts file to keep the block in"
//!
//! [[handler]]                           # a [[handler]] table of the config file
//! name = "hosts"
//! template = "hosts.j2"                 # relative to the plugin's folder
//! destination = "{{ settings.path }}"   # settings fill in any string
//! block = "rumor"
//!
//! [[check]]                             # a [[check]] of the config file (docs/health.md),
//! name = "port"                         # published as health_hosts.port
//! tcp = "127.0.0.1:{{ settings.port }}"
//!
//! [files]                               # every other file of the folder, with its SHA-256
//! "hosts.j2" = "5f1c…"
//! ```
//!
//! A handler's strings are templates of their own, rendered with `settings` when the plugin is
//! loaded (strictly: a setting the manifest does not declare is an error); `{{ plugin_dir }}`
//! is the installed folder (for the plugin's scripts); `| quote` quotes a value for the shell.
//! A check's strings are filled in the same way; its name becomes `PLUGIN.NAME`.
//! `{{candidate}}` is left for the check command.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::PluginError;
use super::settings::SettingSpec;

/// The manifest's file name in a plugin's folder.
pub const MANIFEST: &str = "plugin.toml";

/// A parsed `plugin.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// The oldest rumor version this plugin runs on.
    #[serde(default)]
    pub rumor: Option<String>,
    #[serde(default)]
    pub settings: BTreeMap<String, SettingSpec>,
    /// `[[handler]]` tables, kept as TOML until the settings are known.
    #[serde(default)]
    pub handler: Vec<toml::Table>,
    /// `[[check]]` tables (health checks), likewise.
    #[serde(default)]
    pub check: Vec<toml::Table>,
    /// Relative path → SHA-256 (hex) of every file besides the manifest.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Manifest, PluginError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            PluginError::Manifest(format!("{MANIFEST}: {}", e.message().trim_end()))
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&self) -> Result<(), PluginError> {
        check_name(&self.name)?;
        if parse_version(&self.version).is_none() {
            return Err(PluginError::Manifest(format!(
                "version {:?} is not a version such as 1.2.0",
                self.version
            )));
        }
        if let Some(wanted) = &self.rumor {
            let need = parse_version(wanted).ok_or_else(|| {
                PluginError::Manifest(format!("rumor = {wanted:?} is not a version such as 0.1.0"))
            })?;
            let have = parse_version(env!("CARGO_PKG_VERSION")).expect("our version parses");
            if have < need {
                return Err(PluginError::TooOld {
                    plugin: self.name.clone(),
                    needs: wanted.clone(),
                    have: env!("CARGO_PKG_VERSION").to_string(),
                });
            }
        }
        for (name, spec) in &self.settings {
            spec.check(name)?;
        }
        if self.handler.is_empty() && self.check.is_empty() {
            return Err(PluginError::Manifest(
                "the plugin has no [[handler]] and no [[check]]: it would do nothing".into(),
            ));
        }
        for (path, hash) in &self.files {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PluginError::Manifest(format!(
                    "[files] {path:?} = {hash:?} is not a SHA-256 in hex (64 characters)"
                )));
            }
        }
        Ok(())
    }
}

/// A plugin name: 1-64 of `[a-z0-9_-]`, starting with a letter or digit (it names a folder).
pub fn check_name(name: &str) -> Result<(), PluginError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(PluginError::Manifest(format!(
            "plugin name {name:?} is invalid: use 1-64 lowercase letters, digits, '-' and '_', \
             starting with a letter or digit"
        )))
    }
}

/// `1.2.3` (any number of numeric parts) as numbers, for comparison.
fn parse_version(version: &str) -> Option<Vec<u64>> {
    let core = version.split(['-', '+']).next()?;
    core.split('.').map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "demo"
version = "1.0.0"
[[handler]]
command = "true"
"#;

    #[test]
    fn a_minimal_manifest_parses() {
        let m = Manifest::parse(MINIMAL).unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(m.handler.len(), 1);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = Manifest::parse(&MINIMAL.replace("demo", "Demo!")).unwrap_err();
        assert!(err.to_string().contains("plugin name \"Demo!\""), "{err}");
        let err = Manifest::parse(&format!("rumor = \"99.0\"\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("needs rumor 99.0"), "{err}");
        let err = Manifest::parse(&format!("colour = 1\n{MINIMAL}")).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Manifest::parse("name = \"x\"\nversion = \"1\"\n").unwrap_err();
        assert!(
            err.to_string().contains("no [[handler]] and no [[check]]"),
            "{err}"
        );
        let err = Manifest::parse(&format!("{MINIMAL}[files]\n\"a\" = \"zz\"\n")).unwrap_err();
        assert!(err.to_string().contains("not a SHA-256"), "{err}");
    }
}
