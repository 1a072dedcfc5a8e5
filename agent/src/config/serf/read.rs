//! Reading Serf's agent configuration the way `serf agent -config-file/-config-dir` does:
//! files and folders in the order given, a folder's `*.json` files in lexical order (not its
//! subfolders), each a JSON object of Serf's keys, merged with Serf's rules — a later non-empty
//! string or non-zero number wins, `true` sticks, tags merge key by key, `start_join`,
//! `retry_join` and `event_handlers` append. Serf refuses unknown keys and values of the wrong
//! type; so does this, naming the file and the key.
//!
//! The result keeps, for every value, the file it came from, so that a value rumor refuses
//! later (a node name it does not allow, say) is reported against the right file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::SerfImportError;
use super::go_duration::parse_go_duration;

/// A value and the file that gave it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sourced<T> {
    pub value: T,
    pub file: PathBuf,
}

impl<T> Sourced<T> {
    fn at(file: &Path, value: T) -> Sourced<T> {
        Sourced {
            value,
            file: file.to_owned(),
        }
    }
}

/// What a Serf key holds, and how a later file's value merges with an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string; a later non-empty one wins.
    Text,
    /// A Go duration string (`30s`, `1h30m`); a later non-zero one wins.
    Duration,
    /// A number; a later non-zero one wins.
    Number,
    /// `true` sticks once any file sets it.
    Flag,
    /// Like [`Kind::Flag`], but the last file decides, `false` included (Serf's
    /// `enable_compression`).
    LastFlag,
    /// A list of strings; later files append.
    List,
    /// A map of strings (`tags`); merged key by key.
    Map,
    /// The `mdns` object.
    Mdns,
}

/// Every key of Serf's agent configuration (`cmd/serf/command/agent/config.go`).
const KEYS: &[(&str, Kind)] = &[
    ("node_name", Kind::Text),
    ("role", Kind::Text),
    ("disable_coordinates", Kind::Flag),
    ("tags", Kind::Map),
    ("tags_file", Kind::Text),
    ("bind", Kind::Text),
    ("advertise", Kind::Text),
    ("encrypt_key", Kind::Text),
    ("keyring_file", Kind::Text),
    ("log_level", Kind::Text),
    ("rpc_addr", Kind::Text),
    ("rpc_auth", Kind::Text),
    ("protocol", Kind::Number),
    ("replay_on_join", Kind::Flag),
    ("query_response_size_limit", Kind::Number),
    ("query_size_limit", Kind::Number),
    ("user_event_size_limit", Kind::Number),
    ("start_join", Kind::List),
    ("event_handlers", Kind::List),
    ("profile", Kind::Text),
    ("snapshot_path", Kind::Text),
    ("leave_on_terminate", Kind::Flag),
    ("skip_leave_on_interrupt", Kind::Flag),
    ("discover", Kind::Text),
    ("mdns", Kind::Mdns),
    ("interface", Kind::Text),
    ("reconnect_interval", Kind::Duration),
    ("reconnect_timeout", Kind::Duration),
    ("tombstone_timeout", Kind::Duration),
    ("disable_name_resolution", Kind::Flag),
    ("enable_syslog", Kind::Flag),
    ("syslog_facility", Kind::Text),
    ("retry_join", Kind::List),
    ("retry_max_attempts", Kind::Number),
    ("retry_interval", Kind::Duration),
    ("rejoin_after_leave", Kind::Flag),
    ("enable_compression", Kind::LastFlag),
    ("statsite_addr", Kind::Text),
    ("statsd_addr", Kind::Text),
    ("broadcast_timeout", Kind::Duration),
    ("validate_node_names", Kind::Flag),
    // Serf's struct has it without a name of its own; mapstructure matches the field name.
    ("msgpackusenewtimeformat", Kind::Flag),
];

/// The keys of Serf's `mdns` object.
const MDNS_KEYS: &[(&str, Kind)] = &[
    ("interface", Kind::Text),
    ("disable_ipv4", Kind::Flag),
    ("disable_ipv6", Kind::Flag),
];

/// Serf's merged configuration: every key some file set, with the file that set it last
/// (for lists and tags, each entry's own file).
#[derive(Debug, Default)]
pub(super) struct SerfConfig {
    /// The files read, in the order they were merged.
    pub files: Vec<PathBuf>,
    texts: BTreeMap<&'static str, Sourced<String>>,
    durations: BTreeMap<&'static str, Sourced<(String, Duration)>>,
    numbers: BTreeMap<&'static str, Sourced<i64>>,
    flags: BTreeMap<&'static str, Sourced<bool>>,
    lists: BTreeMap<&'static str, Vec<Sourced<String>>>,
    pub tags: BTreeMap<String, Sourced<String>>,
}

impl SerfConfig {
    pub fn text(&self, key: &str) -> Option<&Sourced<String>> {
        self.texts.get(key)
    }

    /// A duration key: the text as written and its value.
    pub fn duration(&self, key: &str) -> Option<&Sourced<(String, Duration)>> {
        self.durations.get(key)
    }

    pub fn number(&self, key: &str) -> Option<&Sourced<i64>> {
        self.numbers.get(key)
    }

    /// A boolean key some file set to `true` (for `enable_compression`: the last file's value).
    pub fn flag(&self, key: &str) -> Option<&Sourced<bool>> {
        self.flags.get(key)
    }

    pub fn list(&self, key: &str) -> &[Sourced<String>] {
        self.lists.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every key that some file set, with where: the order of [`KEYS`].
    pub fn set_keys(&self) -> Vec<(&'static str, &Path)> {
        let mut out = Vec::new();
        for (key, _) in KEYS {
            let file = self
                .texts
                .get(key)
                .map(|s| &s.file)
                .or_else(|| self.durations.get(key).map(|s| &s.file))
                .or_else(|| self.numbers.get(key).map(|s| &s.file))
                .or_else(|| self.flags.get(key).map(|s| &s.file))
                .or_else(|| self.lists.get(key).and_then(|l| l.last()).map(|s| &s.file))
                .or_else(|| match *key {
                    "tags" => self.tags.values().last().map(|s| &s.file),
                    "mdns" => self
                        .texts
                        .get("mdns.interface")
                        .map(|s| &s.file)
                        .or_else(|| self.flags.get("mdns.disable_ipv4").map(|s| &s.file))
                        .or_else(|| self.flags.get("mdns.disable_ipv6").map(|s| &s.file)),
                    _ => None,
                });
            if let Some(file) = file {
                out.push((*key, file.as_path()));
            }
        }
        out
    }
}

/// Reads and merges `paths` (files or folders) in Serf's order.
pub(super) fn read(paths: &[PathBuf]) -> Result<SerfConfig, SerfImportError> {
    if paths.is_empty() {
        return Err(SerfImportError::NoPaths);
    }
    let mut config = SerfConfig::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| SerfImportError::Read {
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            merge_file(&mut config, path)?;
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| SerfImportError::Read {
            path: path.clone(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SerfImportError::Read {
                path: path.clone(),
                source,
            })?;
            let name = entry.file_name();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir && name.to_string_lossy().ends_with(".json") {
                files.push(entry.path());
            }
        }
        // Serf sorts a folder's entries by name, byte by byte.
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        for file in files {
            merge_file(&mut config, &file)?;
        }
    }
    Ok(config)
}

/// Decodes one file and merges it over what came before.
fn merge_file(config: &mut SerfConfig, path: &Path) -> Result<(), SerfImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| SerfImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| SerfImportError::Json {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(SerfImportError::NotObject {
            path: path.to_owned(),
        });
    };
    config.files.push(path.to_owned());
    merge_object(config, path, &object, KEYS, "")
}

/// Merges the keys of `object` (Serf's top level, or the `mdns` object with `prefix`
/// `mdns.`).
fn merge_object(
    config: &mut SerfConfig,
    path: &Path,
    object: &Map<String, Value>,
    keys: &'static [(&'static str, Kind)],
    prefix: &str,
) -> Result<(), SerfImportError> {
    for (written, value) in object {
        // mapstructure matches names without regard to case.
        let Some(&(key, kind)) = keys.iter().find(|(k, _)| k.eq_ignore_ascii_case(written)) else {
            return Err(SerfImportError::UnknownKey {
                path: path.to_owned(),
                key: format!("{prefix}{written}"),
            });
        };
        let wrong = |expected: &'static str| SerfImportError::WrongType {
            path: path.to_owned(),
            key: format!("{prefix}{key}"),
            expected,
            got: json_type(value),
        };
        let slot = mdns_key(prefix, key);
        match kind {
            Kind::Text => {
                let text = value.as_str().ok_or_else(|| wrong("a string"))?;
                if !text.is_empty() {
                    config
                        .texts
                        .insert(slot, Sourced::at(path, text.to_owned()));
                }
            }
            Kind::Duration => {
                let text = value
                    .as_str()
                    .ok_or_else(|| wrong("a duration string such as \"30s\""))?;
                if !text.is_empty() {
                    let duration =
                        parse_go_duration(text).map_err(|message| SerfImportError::Invalid {
                            path: path.to_owned(),
                            key: key.to_owned(),
                            message,
                        })?;
                    if !duration.is_zero() {
                        config
                            .durations
                            .insert(slot, Sourced::at(path, (text.to_owned(), duration)));
                    }
                }
            }
            Kind::Number => {
                let n = value.as_i64().ok_or_else(|| wrong("a whole number"))?;
                if n != 0 {
                    config.numbers.insert(slot, Sourced::at(path, n));
                }
            }
            Kind::Flag => {
                if value.as_bool().ok_or_else(|| wrong("true or false"))? {
                    config.flags.insert(slot, Sourced::at(path, true));
                }
            }
            Kind::LastFlag => {
                let on = value.as_bool().ok_or_else(|| wrong("true or false"))?;
                config.flags.insert(slot, Sourced::at(path, on));
            }
            Kind::List => {
                let items = value.as_array().ok_or_else(|| wrong("a list of strings"))?;
                let list = config.lists.entry(slot).or_default();
                for item in items {
                    let item = item.as_str().ok_or_else(|| wrong("a list of strings"))?;
                    list.push(Sourced::at(path, item.to_owned()));
                }
            }
            Kind::Map => {
                let map = value
                    .as_object()
                    .ok_or_else(|| wrong("an object of strings"))?;
                for (k, v) in map {
                    let v = v.as_str().ok_or_else(|| wrong("an object of strings"))?;
                    config
                        .tags
                        .insert(k.clone(), Sourced::at(path, v.to_owned()));
                }
            }
            Kind::Mdns => {
                let object = value.as_object().ok_or_else(|| wrong("an object"))?;
                merge_object(config, path, object, MDNS_KEYS, "mdns.")?;
            }
        }
    }
    Ok(())
}

/// The key an `mdns` sub-key is kept under (`mdns.interface`), or `key` itself at the top.
fn mdns_key(prefix: &str, key: &'static str) -> &'static str {
    if prefix.is_empty() {
        return key;
    }
    match key {
        "interface" => "mdns.interface",
        "disable_ipv4" => "mdns.disable_ipv4",
        _ => "mdns.disable_ipv6",
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::write;
    use super::*;

    #[test]
    fn files_and_folders_merge_in_serfs_order() {
        let dir = tempfile::tempdir().unwrap();
        let conf_d = dir.path().join("conf.d");
        std::fs::create_dir(&conf_d).unwrap();
        std::fs::create_dir(conf_d.join("ignored.json")).unwrap();
        let base = write(
            dir.path(),
            "base.json",
            r#"{"node_name": "web-1", "tags": {"role": "db", "dc": "east"},
                "start_join": ["10.0.0.1"], "event_handlers": ["a.sh"],
                "enable_compression": true, "rejoin_after_leave": true}"#,
        );
        // Lexical order: 10-... before 20-...; README is not JSON and is skipped.
        write(
            &conf_d,
            "20-late.json",
            r#"{"node_name": "web-2", "event_handlers": ["c.sh"], "rejoin_after_leave": false,
                "enable_compression": false, "reconnect_timeout": "1h30m"}"#,
        );
        write(
            &conf_d,
            "10-early.json",
            r#"{"Node_Name": "", "tags": {"role": "web"}, "start_join": ["10.0.0.2"],
                "event_handlers": ["b.sh"], "mdns": {"interface": "eth0"}}"#,
        );
        write(&conf_d, "README", "not json");
        let config = read(&[base.clone(), conf_d.clone()]).unwrap();
        assert_eq!(config.files.len(), 3);
        let node = config.text("node_name").unwrap();
        assert_eq!(node.value, "web-2", "a later non-empty string wins");
        assert!(node.file.ends_with("20-late.json"));
        assert_eq!(config.tags["role"].value, "web");
        assert_eq!(config.tags["dc"].value, "east");
        let joins: Vec<&str> = config
            .list("start_join")
            .iter()
            .map(|s| s.value.as_str())
            .collect();
        assert_eq!(joins, ["10.0.0.1", "10.0.0.2"]);
        let handlers: Vec<&str> = config
            .list("event_handlers")
            .iter()
            .map(|s| s.value.as_str())
            .collect();
        assert_eq!(handlers, ["a.sh", "b.sh", "c.sh"]);
        assert!(
            config.flag("rejoin_after_leave").unwrap().value,
            "true sticks"
        );
        assert!(
            !config.flag("enable_compression").unwrap().value,
            "the last file decides"
        );
        assert_eq!(
            config.duration("reconnect_timeout").unwrap().value.1,
            Duration::from_secs(5400)
        );
        assert_eq!(config.text("mdns.interface").unwrap().value, "eth0");
        let keys: Vec<&str> = config.set_keys().iter().map(|(k, _)| *k).collect();
        assert!(keys.contains(&"tags") && keys.contains(&"mdns"), "{keys:?}");
    }

    #[test]
    fn bad_files_are_named_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let broken = write(dir.path(), "broken.json", "{\n  \"node_name\": \"a\",\n}");
        let err = read(&[broken]).unwrap_err().to_string();
        assert!(err.contains("broken.json:3:"), "{err}");
        let typo = write(dir.path(), "typo.json", r#"{"node_nmae": "a"}"#);
        let err = read(&[typo]).unwrap_err().to_string();
        assert!(
            err.contains("typo.json") && err.contains("\"node_nmae\""),
            "{err}"
        );
        let wrong = write(dir.path(), "wrong.json", r#"{"start_join": "10.0.0.1"}"#);
        let err = read(&[wrong]).unwrap_err().to_string();
        assert!(
            err.contains("wrong.json") && err.contains("start_join") && err.contains("list"),
            "{err}"
        );
        let duration = write(dir.path(), "d.json", r#"{"retry_interval": "soon"}"#);
        let err = read(&[duration]).unwrap_err().to_string();
        assert!(err.contains("retry_interval"), "{err}");
        let array = write(dir.path(), "array.json", "[]");
        assert!(matches!(
            read(&[array]),
            Err(SerfImportError::NotObject { .. })
        ));
        let err = read(&[dir.path().join("missing.json")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json"), "{err}");
        assert!(matches!(read(&[]), Err(SerfImportError::NoPaths)));
    }
}
