//! One real `rumor agent` process with its own data directory, on 127.0.0.1 or inside a network
//! namespace.
//!
//! Where the agent's gossip runs is its [`Site`]; everything else is the same for both: the
//! arguments it starts with, the control socket in its data directory (the CLI reaches it from
//! the machine's own namespace, see [`Control`]), its log, kill -9, SIGTERM and restarts, and
//! what a failing test prints.

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
use crate::control::{Control, Member, clear_rumor_env, rumor_command};
use crate::monitor::{Monitor, is_user_event_prefixed};
use crate::ports::free_port;
use crate::process::AgentProcess;
use crate::wait::{POLL, wait_for};

/// How long an agent may take to answer on its control socket after it is spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// On 127.0.0.1, on a port free for UDP and TCP (see [`free_port`]).
    Loopback,
    /// Inside network namespace `ns` (started with `ip netns exec`), on `ip` and `port`; see
    /// [`crate::netns::Host::site`].
    Namespace { ns: String, ip: Ipv4Addr, port: u16 },
}

impl Site {
    fn ip(&self) -> Ipv4Addr {
        match self {
            Site::Loopback => Ipv4Addr::LOCALHOST,
            Site::Namespace { ip, .. } => *ip,
        }
    }

    /// The port to bind: a fresh free one on loopback, the host's own in a namespace.
    fn pick_port(&self) -> u16 {
        match self {
            Site::Loopback => free_port(),
            Site::Namespace { port, .. } => *port,
        }
    }
}

/// A running (or killed, or exited) `rumor agent`. Dropping it kills the process; if the test is
/// panicking, it first prints the tail of the agent's log and keeps its directory for a look.
pub struct Agent {
    name: String,
    site: Site,
    port: u16,
    data_dir: PathBuf,
    extra: Vec<String>,
    control: Control,
    process: AgentProcess,
    tmp: Option<TempDir>,
}

/// Why a spawn did not produce a serving agent.
/// How long a restart waits for its address to be free again.
const PORT_BACK: Duration = Duration::from_secs(10);

enum StartFailure {
    /// The port was taken between our check and the agent's bind: worth a retry on loopback.
    AddrInUse(String),
    Other(String),
}

impl Agent {
    /// Starts an agent on 127.0.0.1 (see [`Agent::start_at`]).
    pub fn start(name: &str, extra: &[&str]) -> Agent {
        Agent::start_at(Site::Loopback, name, extra)
    }

    /// Starts `rumor agent --node NAME --bind IP:PORT --data-dir <tmp>/NAME --control
    /// <tmp>/NAME/control.sock --log-level debug --profile local [extra...]` at `site` (without
    /// `--profile local` when `extra` has its own `--profile`), and waits until its control
    /// socket answers `rumor info`.
    ///
    /// Panics, with the tail of the agent's log, if it exits or does not answer within
    /// [`START_TIMEOUT`]. If a loopback port was taken meanwhile, retries on another one.
    pub fn start_at(site: Site, name: &str, extra: &[&str]) -> Agent {
        let tmp = test_tempdir();
        let data_dir = tmp.path().join(name);
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let mut agent = Agent {
            name: name.to_owned(),
            port: site.pick_port(),
            site,
            control: Control::new(name, data_dir.join("control.sock")),
            data_dir: data_dir.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: AgentProcess::new(name, data_dir.join("agent.log")),
            tmp: Some(tmp),
        };
        for attempt in 1..=3 {
            match agent.spawn_and_wait() {
                Ok(()) => return agent,
                Err(StartFailure::AddrInUse(why))
                    if attempt < 3 && agent.site == Site::Loopback =>
                {
                    eprintln!(
                        "agent {name}: port {} was taken ({why}); retrying",
                        agent.port
                    );
                    agent.port = agent.site.pick_port();
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

    /// The address the agent binds: 127.0.0.1, or its namespace host's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.site.ip()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gossip address, `IP:PORT` (what `--join` takes).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip(), self.port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The agent's control socket, for CLI commands from another thread.
    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn control_path(&self) -> PathBuf {
        self.control.socket().to_path_buf()
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("agent.log")
    }

    /// The process id while the agent runs (`ip netns exec` execs the agent in place).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// See [`Control::cli`].
    pub fn cli(&self, args: &[&str]) -> Output {
        self.control.cli(args)
    }

    /// See [`Control::try_cli`].
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        self.control.try_cli(args)
    }

    /// See [`Control::cli_ok`].
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.control.cli_ok(args)
    }

    /// See [`Control::members`].
    pub fn members(&self) -> Result<Vec<Member>, String> {
        self.control.members()
    }

    /// See [`Control::members_named`].
    pub fn members_named(&self, name: &str) -> Result<Vec<Member>, String> {
        self.control.members_named(name)
    }

    /// See [`Control::info`].
    pub fn info(&self) -> Result<Value, String> {
        self.control.info()
    }

    /// See [`Control::counter`].
    pub fn counter(&self, name: &str) -> Result<u64, String> {
        self.control.counter(name)
    }

    /// Starts `rumor monitor --format json` against this agent.
    pub fn monitor(&self) -> Monitor {
        Monitor::start(&self.control)
    }

    /// Kills the process with SIGKILL (no graceful leave) and reaps it.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Sends SIGTERM (a graceful leave) and waits up to `timeout` for the exit; panics if the
    /// agent is still running then.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.process.terminate();
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} still runs {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log_tail(crate::LOG_TAIL_LINES)
            )
        })
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

    /// Starts a new process with the same name, site, port, data dir and extra arguments, and
    /// waits until it serves. The old one must be gone ([`Agent::kill9`], [`Agent::terminate`],
    /// `rumor leave`).
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "restart of {} while it runs: kill9() or terminate() first",
            self.name
        );
        // A restart keeps its address. Something else may hold it for a moment (a process
        // of a parallel test that checked the port while it was free): wait until it is free
        // again, generously, and try once more.
        let outcome = match self.spawn_and_wait() {
            Err(StartFailure::AddrInUse(_)) if matches!(self.site, Site::Loopback) => {
                let port = self.port;
                wait_for(PORT_BACK, "the agent's port to be free again", || {
                    crate::ports::is_free(port)
                        .then_some(())
                        .ok_or_else(|| format!("127.0.0.1:{port} is in use"))
                });
                self.spawn_and_wait()
            }
            other => other,
        };
        match outcome {
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

    /// `rumor agent ...` at the agent's site: the binary itself on loopback, under
    /// `ip netns exec NS` in a namespace.
    fn command(&self) -> Command {
        let mut cmd = match &self.site {
            Site::Loopback => rumor_command(),
            Site::Namespace { ns, .. } => {
                let mut cmd = Command::new("ip");
                clear_rumor_env(&mut cmd);
                cmd.args(["netns", "exec", ns]).arg(rumor_bin());
                cmd
            }
        };
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
            "--log-level".into(),
            "debug".into(),
        ];
        if !self.extra.iter().any(|a| a == "--profile") {
            args.extend(["--profile".into(), "local".into()]);
        }
        args.extend(self.extra.iter().map(OsString::from));
        cmd.args(args);
        cmd
    }

    fn spawn_and_wait(&mut self) -> Result<(), StartFailure> {
        let mut cmd = self.command();
        self.process
            .note(&format!("starting {}", command_line(&cmd)));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| StartFailure::Other(format!("cannot open its log: {e}")))?;
        let log_err = log
            .try_clone()
            .map_err(|e| StartFailure::Other(format!("cannot open its log: {e}")))?;
        let child = cmd
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| {
                StartFailure::Other(format!("cannot spawn {}: {e}", command_line(&cmd)))
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

    /// Where the agent runs, for messages: `127.0.0.1:PORT` or `IP:PORT in NS`.
    fn place(&self) -> String {
        match &self.site {
            Site::Loopback => self.addr().to_string(),
            Site::Namespace { ns, .. } => format!("{} in {ns}", self.addr()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let place = self.place();
        self.process.stop_on_drop(&place, &mut self.tmp);
    }
}

/// Starts agents `names` on 127.0.0.1, the first as the seed and the others joining it, each
/// with `extra(name)` arguments, and waits up to `timeout` until every one lists all of them
/// alive.
pub fn start_cluster(
    names: &[&str],
    timeout: Duration,
    extra: impl Fn(&str) -> Vec<String>,
) -> Vec<Agent> {
    let mut agents: Vec<Agent> = Vec::new();
    for name in names {
        let mut args = extra(name);
        if let Some(seed) = agents.first() {
            args.extend(["--join".to_string(), seed.addr().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agents.push(Agent::start(name, &args));
    }
    for a in &agents {
        wait_for(timeout, "every agent to list all members alive", || {
            let alive = a.members()?.iter().filter(|m| m.status == "alive").count();
            if alive == names.len() {
                Ok(())
            } else {
                Err(format!("{} sees {alive} alive", a.name()))
            }
        });
    }
    agents
}

/// Waits until each of `agents` has completed `n` more push-pull (anti-entropy) exchanges than
/// when called. A node starts one exchange per push-pull interval and answers its peers', so
/// after a delivery this gives late duplicates (a relay, an exchange) every chance to show up,
/// without a fixed sleep. Panics after `timeout`, naming the agents still short of `n`.
pub fn wait_push_pulls(agents: &[Agent], n: u64, timeout: Duration) {
    let count = |a: &Agent| a.counter("push_pull_ok").unwrap_or(0);
    let base: Vec<u64> = agents.iter().map(count).collect();
    wait_for(
        timeout,
        &format!("{n} more push-pull exchanges on every agent"),
        || {
            let behind: Vec<String> = agents
                .iter()
                .zip(&base)
                .filter_map(|(a, b)| {
                    let now = count(a);
                    (now < b + n).then(|| format!("{} at {now}, from {b}", a.name()))
                })
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join("; "))
            }
        },
    );
}

/// Starts a monitor on every agent and makes sure each stream is live, by sending warm-up user
/// events (a new one every ~0.5 s) until every monitor has seen one, for up to `timeout`.
pub fn live_monitors(agents: &[Agent], timeout: Duration) -> Vec<Monitor> {
    let monitors: Vec<_> = agents.iter().map(Agent::monitor).collect();
    let mut polls = 0u32;
    wait_for(timeout, "every monitor to see a warm-up event", || {
        if polls.is_multiple_of(10) {
            agents[0].cli_ok(&["event", &format!("warmup-{polls}")]);
        }
        polls += 1;
        let missing: Vec<&str> = agents
            .iter()
            .zip(&monitors)
            .filter(|(_, m)| m.count(|l| is_user_event_prefixed(l, "warmup-")) == 0)
            .map(|(a, _)| a.name())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no warm-up event yet on {missing:?}"))
        }
    });
    monitors
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

/// The program and arguments of `cmd`, space-separated, for notes and messages.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
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

    #[test]
    fn tempdir_paths_leave_room_for_a_socket() {
        let t = test_tempdir();
        let sock = t
            .path()
            .join("a-node-name-of-some-length")
            .join("control.sock");
        assert!(sock.as_os_str().len() < 100, "{}", sock.display());
    }

    #[test]
    fn sites_bind_their_own_address() {
        let ns = Site::Namespace {
            ns: "x-1-0-2".into(),
            ip: Ipv4Addr::new(10, 1, 0, 13),
            port: 7946,
        };
        assert_eq!(ns.ip(), Ipv4Addr::new(10, 1, 0, 13));
        assert_eq!(ns.pick_port(), 7946);
        assert_eq!(Site::Loopback.ip(), Ipv4Addr::LOCALHOST);
        assert_ne!(Site::Loopback.pick_port(), Site::Loopback.pick_port());
    }
}
