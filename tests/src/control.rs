//! The `rumor` CLI run against one agent's control socket, as a user would run it.
//!
//! The CLI always runs in the machine's own network namespace: the control socket is a Unix
//! socket in the agent's data directory, reachable from anywhere on the machine, wherever the
//! agent's gossip runs (see [`crate::Site`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::binary::rumor_bin;
use crate::process::run_with_timeout;

/// How long one CLI command may take before it counts as hung.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The control socket of one agent, and the CLI commands run against it. Cheap to clone, so a
/// test's background thread can hold one while the test restarts the agent.
#[derive(Debug, Clone)]
pub struct Control {
    agent: String,
    socket: PathBuf,
}

impl Control {
    /// The control socket `socket` of the agent named `agent` (the name is for messages).
    pub fn new(agent: &str, socket: PathBuf) -> Control {
        Control {
            agent: agent.to_owned(),
            socket,
        }
    }

    /// The agent's name.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `rumor ARGS` against this agent: `--control <socket>` is inserted after `args[0]`
    /// (the subcommand) and `RUMOR_CONTROL` is set too. Panics if it hangs for [`CLI_TIMEOUT`].
    pub fn cli(&self, args: &[&str]) -> Output {
        self.run(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Control::cli`], but returns stdout, or an error naming the command line and its
    /// stderr when it fails or hangs.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`rumor {}` on {} failed ({}): {}",
                args.join(" "),
                self.agent,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Like [`Control::cli`], but panics unless it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// This agent's member list (`rumor members --format json`); `Err` describes a failed
    /// command or an unexpected shape.
    pub fn members(&self) -> Result<Vec<Member>, String> {
        let out = self.try_cli(&["members", "--format", "json"])?;
        let json: Value = serde_json::from_str(&out).map_err(|e| {
            format!("`rumor members --format json` printed invalid JSON ({e}): {out}")
        })?;
        let list = json["members"]
            .as_array()
            .ok_or_else(|| format!("no \"members\" array in {json}"))?;
        list.iter().map(Member::from_json).collect()
    }

    /// The entries with `name` in this agent's member list (a healthy list has at most one).
    pub fn members_named(&self, name: &str) -> Result<Vec<Member>, String> {
        Ok(self
            .members()?
            .into_iter()
            .filter(|m| m.name == name)
            .collect())
    }

    /// `rumor info --format json`, parsed.
    pub fn info(&self) -> Result<Value, String> {
        let out = self.try_cli(&["info", "--format", "json"])?;
        serde_json::from_str(&out)
            .map_err(|e| format!("`rumor info` on {} printed invalid JSON ({e})", self.agent))
    }

    /// One of the cluster counters of `rumor info` (`cluster.counters.NAME`).
    pub fn counter(&self, name: &str) -> Result<u64, String> {
        let info = self.info()?;
        info["cluster"]["counters"][name].as_u64().ok_or_else(|| {
            format!(
                "info of {} has no cluster.counters.{name}: {info}",
                self.agent
            )
        })
    }

    fn run(&self, args: &[&str]) -> Result<Output, String> {
        let mut full: Vec<OsString> = Vec::with_capacity(args.len() + 2);
        if let Some((sub, rest)) = args.split_first() {
            full.push(sub.into());
            full.push("--control".into());
            full.push(self.socket.clone().into());
            full.extend(rest.iter().map(OsString::from));
        }
        let mut cmd = rumor_command();
        cmd.args(&full).env("RUMOR_CONTROL", &self.socket);
        run_with_timeout(&mut cmd, CLI_TIMEOUT).map_err(|e| format!("{}: {e}", self.agent))
    }
}

/// One entry of `rumor members --format json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub status: String,
    pub tags: BTreeMap<String, String>,
    pub generation: u64,
}

impl Member {
    /// Reads the fields every member entry must have; `Err` names what is missing.
    pub fn from_json(v: &Value) -> Result<Member, String> {
        let str_field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("member entry without string {k:?}: {v}"))
        };
        let num_field = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("member entry without number {k:?}: {v}"))
        };
        let tags = v["tags"]
            .as_object()
            .ok_or_else(|| format!("member entry without \"tags\" object: {v}"))?
            .iter()
            .map(|(k, val)| (k.clone(), val.as_str().unwrap_or_default().to_owned()))
            .collect();
        Ok(Member {
            name: str_field("name")?,
            addr: str_field("addr")?,
            port: u16::try_from(num_field("port")?).map_err(|e| format!("port: {e}: {v}"))?,
            status: str_field("status")?,
            tags,
            generation: num_field("generation")?,
        })
    }
}

/// A `rumor` command with no `RUMOR_*` variable inherited from the developer's shell (so a
/// stray `RUMOR_JOIN` cannot change what a test runs).
pub fn rumor_command() -> Command {
    let mut cmd = Command::new(rumor_bin());
    clear_rumor_env(&mut cmd);
    cmd
}

/// Removes every inherited `RUMOR_*` variable from `cmd`'s environment.
pub fn clear_rumor_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUMOR_") {
            cmd.env_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_from_json() {
        let v = json!({"name": "n1", "addr": "127.0.0.1", "port": 7946, "status": "alive",
                       "tags": {"role": "web"}, "generation": 3, "protocol": 1});
        let m = Member::from_json(&v).unwrap();
        assert_eq!(m.name, "n1");
        assert_eq!(m.tags["role"], "web");
        assert_eq!(m.generation, 3);
        let err = Member::from_json(&json!({"name": "n1", "tags": {}})).unwrap_err();
        assert!(err.contains("addr"), "{err}");
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_the_agent() {
        let control = Control::new("nobody", PathBuf::from("/nonexistent/control.sock"));
        let err = control.try_cli(&["info"]).unwrap_err();
        assert!(err.contains("`rumor info` on nobody failed"), "{err}");
    }
}
