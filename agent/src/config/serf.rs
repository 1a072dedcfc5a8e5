//! `rumor config import-serf`: Serf agent configuration (JSON files and `-config-dir`
//! folders) turned into `rumor.toml`.
//!
//! * `read.rs` reads the files as `serf agent` does — folders' `*.json` in lexical order, each
//!   merged over the previous with Serf's rules — and refuses what Serf refuses (unknown keys,
//!   values of the wrong type), naming the file and the key.
//! * `translate.rs` writes the TOML: every key with a rumor equivalent as that key, checked
//!   with rumor's own rules so that the text starts an agent; every other key as a comment
//!   saying why rumor does without it. Nothing Serf was given is dropped silently.
//! * `go_duration.rs` reads Go's duration syntax, which Serf's configs and flags use.

use std::path::PathBuf;

use thiserror::Error;

mod go_duration;
mod read;
mod translate;

pub use go_duration::{format_duration, parse_go_duration};

/// Reads Serf configuration `paths` (files, or folders of `*.json` files) in Serf's order and
/// returns the equivalent `rumor.toml` text.
pub fn import_serf(paths: &[PathBuf]) -> Result<String, SerfImportError> {
    translate::translate(&read::read(paths)?)
}

/// Why Serf's configuration could not be imported. Each names the file (and the key).
#[derive(Debug, Error)]
pub enum SerfImportError {
    #[error("no Serf configuration given: name the JSON files or config folders to import")]
    NoPaths,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: not valid JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: a Serf config file holds one JSON object, {{\"node_name\": ...}}", path.display())]
    NotObject { path: PathBuf },
    #[error(
        "{}: unknown key {key:?}: Serf refuses it too; check its spelling against Serf's agent configuration",
        path.display()
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error("{}: key {key:?} must be {expected}, not {got}", path.display())]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("{}: key {key:?}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// Writes `text` to `dir/name`, for the tests of this module and its parts.
#[cfg(test)]
fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::cluster::keyring::Key;
    use crate::config::{AgentArgs, ConfigFile, HostDefaults};

    /// The imported text, parsed and resolved as `rumor agent --config` would.
    fn resolved(text: &str) -> crate::config::AgentConfig {
        let file = ConfigFile::parse(Path::new("imported.toml"), text.to_owned())
            .unwrap_or_else(|e| panic!("the import is not valid rumor.toml: {e}\n{text}"));
        let host = HostDefaults {
            hostname: Ok("host".into()),
            data_dir: "/var/lib/rumor".into(),
        };
        AgentArgs::default()
            .resolve_with(Some(&file), &host)
            .unwrap_or_else(|e| panic!("the import does not resolve: {e}\n{text}"))
    }

    #[test]
    fn a_config_dir_imports_into_settings_that_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("serf.d");
        std::fs::create_dir(&conf).unwrap();
        write(
            &conf,
            "00-base.json",
            r#"{
                "node_name": "web-1",
                "bind": "10.0.0.5",
                "advertise": "203.0.113.7:8000",
                "tags": {"dc": "east", "rack.id": "r1"},
                "role": "web",
                "start_join": ["10.0.0.1:7946"],
                "retry_join": ["10.0.0.2"],
                "log_level": "ERR",
                "profile": "wan",
                "reconnect_timeout": "1.5h",
                "tombstone_timeout": "72h0m0s",
                "rejoin_after_leave": true,
                "user_event_size_limit": 900,
                "query_response_size_limit": 4096,
                "rpc_auth": "s3cret",
                "event_handlers": ["member-join,member-leave=/etc/serf/lb.sh", "query:load=uptime"]
            }"#,
        );
        write(
            &conf,
            "10-more.json",
            r#"{"event_handlers": ["/etc/serf/all.sh"], "protocol": 5, "retry_interval": "10s",
                "mdns": {"interface": "eth0"}, "leave_on_terminate": true}"#,
        );
        let text = import_serf(&[conf]).unwrap();
        let config = resolved(&text);
        assert_eq!(config.node, "web-1");
        assert_eq!(config.bind, "10.0.0.5:7946".parse().unwrap());
        assert_eq!(config.advertise, Some("203.0.113.7:8000".parse().unwrap()));
        assert_eq!(
            config.tags["role"], "web",
            "Serf's role wins over tags.role"
        );
        assert_eq!(config.tags["dc"], "east");
        assert_eq!(config.tags["rack.id"], "r1");
        assert_eq!(config.join, ["10.0.0.1:7946"]);
        assert_eq!(config.retry_join, ["10.0.0.2"]);
        assert_eq!(config.log_level, "error");
        assert_eq!(config.profile, crate::cluster::Profile::Wan);
        assert_eq!(config.reconnect_timeout, Duration::from_secs(5400));
        assert_eq!(config.tombstone_timeout, Duration::from_secs(72 * 3600));
        assert!(config.rejoin_after_leave);
        assert_eq!(
            config.max_event_bytes, 1024,
            "the larger of Serf's two limits"
        );
        assert_eq!(config.max_response_bytes, 1200, "cut to one packet");
        assert_eq!(config.control, "127.0.0.1:7373");
        assert!(config.control_token.is_some());

        let names: Vec<&str> = config.handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["serf-1", "serf-2", "serf-3"]);
        let lb = &config.handlers[0];
        assert_eq!(lb.filter.to_string(), "member-join,member-leave");
        assert_eq!(lb.runtime.command(), Some("/etc/serf/lb.sh"));
        assert_eq!(lb.coalesce, Some(Duration::from_secs(3)));
        assert_eq!(lb.coalesce_quiet, Some(Duration::from_secs(1)));
        assert!(
            config
                .handlers
                .iter()
                .all(|h| h.serial_group.as_deref() == Some("serf")),
            "Serf runs its handlers one at a time"
        );
        assert_eq!(
            config.handlers[1].coalesce, None,
            "Serf does not coalesce queries"
        );
        assert_eq!(config.handlers[2].filter.to_string(), "*");

        // What rumor does without is kept, with the reason and the file.
        for key in [
            "protocol = 5",
            "retry_interval = \"10s\"",
            "mdns = {",
            "leave_on_terminate",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("# {key}")))
                .unwrap_or_else(|| panic!("{key} is not listed:\n{text}"));
            assert!(line.contains("10-more.json"), "{line}");
        }
        assert!(
            text.contains("not imported: rumor speaks its own wire protocol"),
            "{text}"
        );
    }

    #[test]
    fn a_keyring_file_is_used_in_place_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [Key::generate().to_base64(), Key::generate().to_base64()];
        let ring = write(
            dir.path(),
            "keyring",
            &serde_json::to_string(&keys).unwrap(),
        );
        let conf = write(
            dir.path(),
            "serf.json",
            &format!(r#"{{"keyring_file": {:?}}}"#, ring.to_str().unwrap()),
        );
        let text = import_serf(std::slice::from_ref(&conf)).unwrap();
        assert!(text.contains("rumor reads its 2 key(s)"), "{text}");
        assert!(
            text.contains("chmod 600"),
            "a 0644 keyring gets a warning: {text}"
        );
        assert_eq!(resolved(&text).keyring_file, Some(ring.clone()));

        // Both a key and a keyring file: Serf refuses it, and so does the import.
        let both = write(
            dir.path(),
            "both.json",
            &format!(
                r#"{{"keyring_file": {:?}, "encrypt_key": {:?}}}"#,
                ring.to_str().unwrap(),
                keys[0]
            ),
        );
        let err = import_serf(&[both]).unwrap_err().to_string();
        assert!(
            err.contains("both.json") && err.contains("keyring_file"),
            "{err}"
        );

        // A keyring that is not a list of keys.
        write(dir.path(), "keyring", "{}");
        let err = import_serf(&[conf]).unwrap_err().to_string();
        assert!(
            err.contains("serf.json") && err.contains("keyring_file"),
            "{err}"
        );

        let key = write(
            dir.path(),
            "key.json",
            &format!(r#"{{"encrypt_key": {:?}}}"#, keys[1]),
        );
        let text = import_serf(&[key]).unwrap();
        assert_eq!(resolved(&text).encrypt.as_deref(), Some(keys[1].as_str()));
        let bad = write(dir.path(), "bad-key.json", r#"{"encrypt_key": "c2hvcnQ="}"#);
        let err = import_serf(&[bad]).unwrap_err().to_string();
        assert!(
            err.contains("bad-key.json") && err.contains("encrypt_key"),
            "{err}"
        );
    }

    #[test]
    fn values_rumor_refuses_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (r#"{"node_name": "web 1"}"#, "node_name"),
            (r#"{"bind": "serf.example.com"}"#, "bind"),
            (r#"{"log_level": "LOUD"}"#, "log_level"),
            (r#"{"profile": "fast"}"#, "profile"),
            (r#"{"tags": {"bad key": "x"}}"#, "tags"),
            (
                r#"{"event_handlers": ["member-jion=x.sh"]}"#,
                "event_handlers",
            ),
            (r#"{"rpc_addr": "localhost", "rpc_auth": "t"}"#, "rpc_addr"),
            (
                r#"{"tags": {"a": "b"}, "tags_file": "/etc/serf/tags"}"#,
                "tags",
            ),
        ];
        for (i, (json, key)) in cases.iter().enumerate() {
            let file = write(dir.path(), &format!("case-{i}.json"), json);
            let err = import_serf(&[file]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("case-{i}.json")) && err.contains(&format!("{key:?}")),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn an_address_without_a_token_stays_a_comment_and_a_tags_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tags = write(dir.path(), "tags.json", r#"{"role": "web"}"#);
        let conf = write(
            dir.path(),
            "serf.json",
            &format!(
                r#"{{"rpc_addr": "127.0.0.1:7373", "tags_file": {:?}}}"#,
                tags.to_str().unwrap()
            ),
        );
        let text = import_serf(&[conf]).unwrap();
        let config = resolved(&text);
        assert!(
            config.control.ends_with("control.sock"),
            "{}",
            config.control
        );
        assert!(
            text.contains("# rpc_addr = \"127.0.0.1:7373\"") && text.contains("needs")
                || text.contains("only with a token"),
            "{text}"
        );
        assert_eq!(config.tags_file, Some(tags));
    }
}
