//! One real `rumor agent` process on a 127.0.0.1 port, with its own data directory.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::binary::rumor_bin;
use crate::monitor::Monitor;
use crate::ports::free_port;
use crate::process::AgentProcess;
use crate::process::run_with_timeout;
use crate::wait::POLL;

/// How long an agent may take to answer on its control socket after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one CLI command may take before it counts as hung.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// A running (or killed, or exited) `rumor agent`. Dropping it kills the process; if the test is
/// panicking, it first prints the tail of the agent's log and keeps its directory for a look.
pub struct Agent {
    name: String,
    port: u16,
    data_dir: PathBuf,
    extra: Vec<String>,
    process: AgentProcess,
    tmp: Option<TempDir>,
}

/// Why a spawn did not produce a serving agent.
enum StartFailure {
    /// The port was taken between our check and the agent's bind: worth a retry.
    AddrInUse(String),
    Other(String),
}

impl Agent {
    /// Starts `rumor agent --node NAME --bind 127.0.0.1:PORT --data-dir <tmp>/NAME
    /// --control <tmp>/NAME/control.sock --profile local --log-level debug [extra...]` on a free
    /// port, and waits until its control socket answers `rumor info`.
    ///
    /// Panics, with the tail of the agent's log, if it exits or does not answer within
    /// [`START_TIMEOUT`]. If the port was taken meanwhile, retries on another one.
    pub fn start(name: &str, extra: &[&str]) -> Agent {
        let tmp = test_tempdir();
        let data_dir = tmp.path().join(name);
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let mut agent = Agent {
            name: name.to_owned(),
            port: free_port(),
            data_dir: data_dir.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: AgentProcess::new(name, data_dir.join("agent.log")),
            tmp: Some(tmp),
        };
        for attempt in 1..=3 {
            match agent.spawn_and_wait() {
                Ok(()) => return agent,
                Err(StartFailure::AddrInUse(why)) if attempt < 3 => {
                    eprintln!(
                        "agent {name}: port {} was taken ({why}); retrying",
                        agent.port
                    );
                    agent.port = free_port();
                }
                Err(StartFailure::AddrInUse(why) | StartFailure::Other(why)) => {
                    panic!("agent {name} did not start: {why}")
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gossip address, `127.0.0.1:PORT` (what `--join` takes).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn control_path(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("agent.log")
    }

    /// The process id while the agent runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Runs `rumor ARGS` against this agent: `--control <socket>` is inserted after `args[0]`
    /// (the subcommand) and `RUMOR_CONTROL` is set too. Panics if it hangs for [`CLI_TIMEOUT`].
    pub fn cli(&self, args: &[&str]) -> Output {
        let control = self.control_path();
        let mut full: Vec<OsString> = Vec::with_capacity(args.len() + 2);
        if let Some((sub, rest)) = args.split_first() {
            full.push(sub.into());
            full.push("--control".into());
            full.push(control.clone().into());
            full.extend(rest.iter().map(OsString::from));
        }
        let mut cmd = rumor_command();
        cmd.args(&full).env("RUMOR_CONTROL", &control);
        run_with_timeout(&mut cmd, CLI_TIMEOUT).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Like [`Agent::cli`], but returns stdout, or the command line and stderr on failure.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self.cli(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`rumor {}` on {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Like [`Agent::cli`], but panics unless it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `rumor members --format json`, parsed. Panics if the command fails.
    pub fn members_json(&self) -> Value {
        self.try_members_json().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_members_json(&self) -> Result<Value, String> {
        let out = self.try_cli(&["members", "--format", "json"])?;
        serde_json::from_str(&out)
            .map_err(|e| format!("`rumor members --format json` printed invalid JSON ({e}): {out}"))
    }

    /// This agent's member list; `Err` describes a failed command or an unexpected shape.
    pub fn members(&self) -> Result<Vec<Member>, String> {
        let json = self.try_members_json()?;
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

    /// Starts `rumor monitor --format json` against this agent.
    pub fn monitor(&self) -> Monitor {
        Monitor::start(self)
    }

    /// Kills the process with SIGKILL (no graceful leave) and reaps it.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Waits up to `timeout` for the process to exit on its own (after `rumor leave`, say).
    /// Returns its exit status, or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Starts a new process with the same name, port, data dir and extra arguments, and waits
    /// until it serves. The old one must be gone (see [`Agent::kill9`]).
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "restart of {} while it runs: kill9() or leave first",
            self.name
        );
        match self.spawn_and_wait() {
            Ok(()) => {}
            Err(StartFailure::AddrInUse(why) | StartFailure::Other(why)) => {
                panic!("agent {} did not restart: {why}", self.name)
            }
        }
    }

    /// Like [`Agent::restart`] with new extra arguments (kept for later restarts).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Everything the agent (all its processes so far) wrote to stdout and stderr, with the
    /// harness's `=== harness: ... ===` notes between them.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The length of the log now; pass it to [`Agent::log_since`] to see only later lines.
    pub fn log_len(&self) -> usize {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize)
    }

    /// The log from byte `offset` on.
    pub fn log_since(&self, offset: usize) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(log.get(offset..).unwrap_or_default()).into_owned()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "agent".into(),
            "--node".into(),
            self.name.clone().into(),
            "--bind".into(),
            self.addr().to_string().into(),
            "--data-dir".into(),
            self.data_dir.clone().into(),
            "--control".into(),
            self.control_path().into(),
            "--profile".into(),
            "local".into(),
            "--log-level".into(),
            "debug".into(),
        ];
        args.extend(self.extra.iter().map(OsString::from));
        args
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let args = self.args();
        self.process
            .note(&format!("starting rumor {}", shell_words(&args)));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| StartFailure::Other(format!("cannot open its log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| StartFailure::Other(format!("cannot open its log: {e}")))?;
        let child = rumor_command()
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| {
                StartFailure::Other(format!("cannot spawn {}: {e}", rumor_bin().display()))
            })?;
        self.process.started(child);
        self.wait_ready()
    }

    /// Polls `rumor info` until it succeeds, the process exits, or [`START_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let start = Instant::now();
        loop {
            if !self.is_running() {
                let log = self.log_tail(crate::LOG_TAIL_LINES);
                let why = format!(
                    "it exited ({}) before serving; log {}:\n{log}",
                    self.process
                        .exit_status()
                        .map_or("unknown status".into(), |s| s.to_string()),
                    self.log_path().display()
                );
                let lower = log.to_lowercase();
                return Err(
                    if lower.contains("address already in use") || lower.contains("addrinuse") {
                        StartFailure::AddrInUse(why)
                    } else {
                        StartFailure::Other(why)
                    },
                );
            }
            let last = match self.try_cli(&["info"]) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if start.elapsed() > START_TIMEOUT {
                self.kill9();
                return Err(StartFailure::Other(format!(
                    "no answer on {} within {START_TIMEOUT:?} (last: {last}); log {}:\n{}",
                    self.control_path().display(),
                    self.log_path().display(),
                    self.log_tail(crate::LOG_TAIL_LINES)
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let place = format!("127.0.0.1:{}", self.port);
        self.process.stop_on_drop(&place, &mut self.tmp);
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
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUMOR_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A fresh temporary directory with a short path: Unix socket paths are limited to 108 bytes.
pub fn test_tempdir() -> TempDir {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() <= 40 {
        base
    } else {
        PathBuf::from("/tmp")
    };
    tempfile::Builder::new()
        .prefix("rumor-test-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a temporary directory in {}: {e}",
                base.display()
            )
        })
}

fn shell_words(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates (or truncates) a file, for tests that write config files.
pub fn write_file(path: &Path, text: &str) {
    File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
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
    fn tempdir_paths_leave_room_for_a_socket() {
        let t = test_tempdir();
        let sock = t
            .path()
            .join("a-node-name-of-some-length")
            .join("control.sock");
        assert!(sock.as_os_str().len() < 100, "{}", sock.display());
    }
}
