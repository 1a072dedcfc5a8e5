//! A plugin's settings: what each takes ([`SettingSpec`]: type, default, required, help), and
//! the values an installation gives them (`--set k=v`, kept in the installed folder's
//! `settings.toml`), checked against the specs.

use std::collections::BTreeMap;

use rumor_handlers::Setting;
use serde::{Deserialize, Serialize};

use super::PluginError;

/// The installed folder's file of the values given with `--set` (and `rumor plugin set`).
pub const SETTINGS_FILE: &str = "settings.toml";

/// What a setting takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettingType {
    String,
    Integer,
    Boolean,
    /// `500ms`, `2s`, `1m30s`.
    Duration,
    /// An absolute path.
    Path,
}

impl SettingType {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingType::String => "string",
            SettingType::Integer => "integer",
            SettingType::Boolean => "boolean",
            SettingType::Duration => "duration",
            SettingType::Path => "path",
        }
    }
}

/// One `[settings.NAME]` table of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    #[serde(rename = "type")]
    pub kind: SettingType,
    /// The value when none is given. A setting without a default and not `required` is an
    /// empty string (or 0, or false) when not given.
    #[serde(default)]
    pub default: Option<toml::Value>,
    /// Install refuses to go on without a value.
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub help: String,
}

impl SettingSpec {
    /// The spec itself is sound: its default has its type.
    pub fn check(&self, name: &str) -> Result<(), PluginError> {
        if let Some(default) = &self.default {
            self.from_toml(name, default)?;
        }
        if self.required && self.default.is_some() {
            return Err(PluginError::Manifest(format!(
                "setting {name:?} is required and has a default: it can only be one of them"
            )));
        }
        Ok(())
    }

    /// A value typed on the command line (`--set name=TEXT`).
    pub fn parse(&self, name: &str, text: &str) -> Result<Setting, PluginError> {
        let wrong = |why: String| PluginError::Setting {
            name: name.to_string(),
            message: why,
        };
        Ok(match self.kind {
            SettingType::String => Setting::Text(text.to_string()),
            SettingType::Integer => Setting::Integer(
                text.trim()
                    .parse()
                    .map_err(|_| wrong(format!("{text:?} is not an integer")))?,
            ),
            SettingType::Boolean => Setting::Boolean(match text.trim() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" => false,
                _ => return Err(wrong(format!("{text:?} is not true or false"))),
            }),
            SettingType::Duration => {
                humantime::parse_duration(text.trim()).map_err(|e| {
                    wrong(format!(
                        "{text:?} is not a duration such as 500ms or 2s ({e})"
                    ))
                })?;
                Setting::Text(text.trim().to_string())
            }
            SettingType::Path => {
                if !text.is_empty() && !text.starts_with('/') {
                    return Err(wrong(format!("{text:?} is not an absolute path")));
                }
                Setting::Text(text.to_string())
            }
        })
    }

    /// A value from TOML (a default, or `settings.toml`).
    pub fn from_toml(&self, name: &str, value: &toml::Value) -> Result<Setting, PluginError> {
        let wrong = || PluginError::Setting {
            name: name.to_string(),
            message: format!("{value} is not a {}", self.kind.as_str()),
        };
        match (self.kind, value) {
            (SettingType::Integer, toml::Value::Integer(i)) => Ok(Setting::Integer(*i)),
            (SettingType::Boolean, toml::Value::Boolean(b)) => Ok(Setting::Boolean(*b)),
            (SettingType::Integer | SettingType::Boolean, _) => Err(wrong()),
            (_, toml::Value::String(s)) => self.parse(name, s),
            _ => Err(wrong()),
        }
    }

    /// The value of a setting nobody gave.
    fn empty(&self) -> Setting {
        match self.kind {
            SettingType::Integer => Setting::Integer(0),
            SettingType::Boolean => Setting::Boolean(false),
            _ => Setting::Text(String::new()),
        }
    }
}

/// The values given to a plugin, as `settings.toml` keeps them.
pub type Given = BTreeMap<String, toml::Value>;

/// Every setting's value: given, else default, else empty. Fails on a value for a setting the
/// plugin does not have, a value of the wrong type, or a required setting without a value.
pub fn resolve(
    specs: &BTreeMap<String, SettingSpec>,
    given: &Given,
) -> Result<BTreeMap<String, Setting>, PluginError> {
    for name in given.keys() {
        if !specs.contains_key(name) {
            let known: Vec<&str> = specs.keys().map(String::as_str).collect();
            return Err(PluginError::Setting {
                name: name.clone(),
                message: format!(
                    "the plugin has no such setting (its settings: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            });
        }
    }
    let mut values = BTreeMap::new();
    for (name, spec) in specs {
        let value = match (given.get(name), &spec.default) {
            (Some(value), _) => spec.from_toml(name, value)?,
            (None, Some(default)) => spec.from_toml(name, default)?,
            (None, None) if spec.required => {
                return Err(PluginError::Setting {
                    name: name.clone(),
                    message: format!(
                        "is required: give it with --set {name}=VALUE ({})",
                        if spec.help.is_empty() {
                            spec.kind.as_str()
                        } else {
                            &spec.help
                        }
                    ),
                });
            }
            (None, None) => spec.empty(),
        };
        values.insert(name.clone(), value);
    }
    Ok(values)
}

/// `--set k=v` values typed by the specs, as TOML for `settings.toml`. Unknown names and
/// values of the wrong type are errors naming the setting.
pub fn parse_given(
    specs: &BTreeMap<String, SettingSpec>,
    pairs: &[(String, String)],
) -> Result<Given, PluginError> {
    let mut given = Given::new();
    for (name, text) in pairs {
        let spec = specs.get(name).ok_or_else(|| {
            let known: Vec<&str> = specs.keys().map(String::as_str).collect();
            PluginError::Setting {
                name: name.clone(),
                message: format!(
                    "the plugin has no such setting (its settings: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            }
        })?;
        let value = match spec.parse(name, text)? {
            Setting::Boolean(b) => toml::Value::Boolean(b),
            Setting::Integer(i) => toml::Value::Integer(i),
            Setting::Text(s) => toml::Value::String(s),
        };
        given.insert(name.clone(), value);
    }
    Ok(given)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> BTreeMap<String, SettingSpec> {
        toml::from_str(
            r#"
port = { type = "integer", default = 80, help = "the port" }
tag = { type = "string", required = true, help = "which members" }
debug = { type = "boolean" }
wait = { type = "duration", default = "1s" }
"#,
        )
        .unwrap()
    }

    #[test]
    fn values_come_from_given_then_default_then_empty() {
        let given = parse_given(
            &specs(),
            &[
                ("tag".into(), "role=web".into()),
                ("port".into(), "8080".into()),
            ],
        )
        .unwrap();
        let values = resolve(&specs(), &given).unwrap();
        assert_eq!(values["port"], Setting::Integer(8080));
        assert_eq!(values["tag"], Setting::Text("role=web".into()));
        assert_eq!(values["debug"], Setting::Boolean(false));
        assert_eq!(values["wait"], Setting::Text("1s".into()));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = parse_given(&specs(), &[("port".into(), "eighty".into())]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting \"port\": \"eighty\" is not an integer"
        );
        let err = parse_given(&specs(), &[("colour".into(), "red".into())]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("setting \"colour\": the plugin has no such setting")
        );
        let err = resolve(&specs(), &Given::new()).unwrap_err();
        assert!(
            err.to_string().starts_with("setting \"tag\": is required"),
            "{err}"
        );
        let err = parse_given(&specs(), &[("wait".into(), "soon".into())]).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }
}
