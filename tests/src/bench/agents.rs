//! N agent processes of one flavour — `rumor agent` or `serf agent` — on 127.0.0.1, each with
//! its own directory, and the CLI calls the benchmark makes against them.
//!
//! Every agent gets two handlers: `user:bench` appends `date +%s%N` to a file named after the
//! node ([`Agents::stamp_command`]), `query:bench` answers `ok`. Agents run in their own
//! process group (a Ctrl-C in the terminal reaches only the benchmark, which then cleans up)
//! and die with the benchmark (`PR_SET_PDEATHSIG`) if it is killed outright.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tempfile::TempDir;

use super::host::{check_interrupt, sleep};
use crate::ports::free_port;
use crate::process::run_with_timeout;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which agent the benchmark drives.
#[derive(Debug, Clone)]
pub enum Flavor {
    /// `agent_args` are added to every `rumor agent` command line (for experiments).
    Rumor {
        bin: PathBuf,
        agent_args: Vec<String>,
    },
    Serf {
        bin: PathBuf,
    },
}

impl Flavor {
    pub fn label(&self) -> &'static str {
        match self {
            Flavor::Rumor { .. } => "rumor",
            Flavor::Serf { .. } => "serf",
        }
    }
}

struct Node {
    name: String,
    /// Gossip port (UDP, and TCP for push-pull).
    port: u16,
    /// Serf's RPC port (rumor uses a Unix socket in `dir`).
    rpc_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The running agents. Dropping it kills them all.
pub struct Agents {
    flavor: Flavor,
    nodes: Vec<Node>,
    stamps: PathBuf,
    // Declared last: removed after the processes are gone.
    tmp: TempDir,
}

/// When `query` saw the answers.
pub struct QueryTiming {
    /// From starting the CLI until it had printed `expected` answers.
    pub all_answered: Option<Duration>,
    /// From starting the CLI until it exited.
    pub returned: Duration,
    pub answers: usize,
}

impl Agents {
    /// Starts `n` agents with the given timing profile and waits until each answers its CLI.
    pub fn start(flavor: Flavor, n: usize, profile: &str) -> anyhow::Result<Agents> {
        let tmp = tempfile::Builder::new()
            .prefix("rumor-bench-")
            .tempdir_in("/tmp")
            .context("cannot create a temporary directory")?;
        let stamps = tmp.path().join("stamps");
        std::fs::create_dir_all(&stamps)?;
        let mut agents = Agents {
            flavor,
            nodes: Vec::with_capacity(n),
            stamps,
            tmp,
        };
        for i in 0..n {
            let name = format!("n{i}");
            let dir = agents.tmp.path().join(&name);
            std::fs::create_dir_all(&dir)?;
            let rpc_port = match agents.flavor {
                Flavor::Serf { .. } => free_port(),
                Flavor::Rumor { .. } => 0,
            };
            agents.nodes.push(Node {
                name,
                port: free_port(),
                rpc_port,
                dir,
                child: None,
            });
        }
        for i in 0..n {
            let child = agents.spawn(i, profile)?;
            agents.nodes[i].child = Some(child);
        }
        let started = Instant::now();
        for i in 0..n {
            loop {
                check_interrupt()?;
                if let Some(status) = agents.nodes[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    bail!(
                        "{} agent {} exited ({status}) at start; log:\n{}",
                        agents.flavor.label(),
                        agents.nodes[i].name,
                        agents.log_tail(i)
                    );
                }
                if agents
                    .cli(i, &["members"])
                    .is_ok_and(|o| o.status.success())
                {
                    break;
                }
                if started.elapsed() > START_TIMEOUT {
                    bail!(
                        "{} agent {} did not answer within {START_TIMEOUT:?}; log:\n{}",
                        agents.flavor.label(),
                        agents.nodes[i].name,
                        agents.log_tail(i)
                    );
                }
                sleep(Duration::from_millis(20))?;
            }
        }
        Ok(agents)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn label(&self) -> &'static str {
        self.flavor.label()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Process ids of the agents still running.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// The directory where the `user:bench` handlers write their timestamps.
    pub fn stamps_dir(&self) -> &Path {
        &self.stamps
    }

    /// The `user:bench` handler's command (run by `/bin/sh -c`, as both agents do).
    pub fn stamp_command(&self) -> String {
        format!("date +%s%N >> {}/$SERF_SELF_NAME", self.stamps.display())
    }

    fn spawn(&self, i: usize, profile: &str) -> anyhow::Result<Child> {
        let node = &self.nodes[i];
        let user = format!("user:bench={}", self.stamp_command());
        let query = "query:bench=echo ok".to_string();
        let bind = format!("127.0.0.1:{}", node.port);
        let mut cmd = match &self.flavor {
            Flavor::Rumor { bin, agent_args } => {
                let mut c = Command::new(bin);
                c.arg("agent")
                    .args(["--node", &node.name, "--bind", &bind])
                    .arg("--data-dir")
                    .arg(&node.dir)
                    .arg("--control")
                    .arg(node.dir.join("control.sock"))
                    .args(["--profile", profile, "--log-level", "warn"])
                    .args(["--event-handler", &user, "--event-handler", &query])
                    .args(agent_args);
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("RUMOR_") {
                        c.env_remove(key);
                    }
                }
                c
            }
            Flavor::Serf { bin } => {
                let mut c = Command::new(bin);
                c.arg("agent")
                    .arg(format!("-node={}", node.name))
                    .arg(format!("-bind={bind}"))
                    .arg(format!("-rpc-addr=127.0.0.1:{}", node.rpc_port))
                    .arg(format!("-profile={profile}"))
                    .arg("-log-level=warn")
                    .arg(format!("-event-handler={user}"))
                    .arg(format!("-event-handler={query}"));
                c
            }
        };
        let log = std::fs::File::create(node.dir.join("agent.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))
    }

    /// The last lines of agent `i`'s log.
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.nodes[i].dir.join("agent.log")).unwrap_or_default();
        crate::binary::tail(&log, 30)
    }

    /// A CLI command against agent `i`: `SUBCOMMAND [args]` with the control address added.
    fn command(&self, i: usize, args: &[&str]) -> Command {
        let node = &self.nodes[i];
        let (sub, rest) = args.split_first().expect("a subcommand");
        match &self.flavor {
            Flavor::Rumor { bin, .. } => {
                let mut c = Command::new(bin);
                c.arg(sub)
                    .arg("--control")
                    .arg(node.dir.join("control.sock"))
                    .args(rest);
                c
            }
            Flavor::Serf { bin } => {
                let mut c = Command::new(bin);
                c.arg(sub)
                    .arg(format!("-rpc-addr=127.0.0.1:{}", node.rpc_port))
                    .args(rest);
                c
            }
        }
    }

    fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<Output> {
        run_with_timeout(&mut self.command(i, args), CLI_TIMEOUT).map_err(anyhow::Error::msg)
    }

    /// A CLI command against agent `i` that must succeed; its stdout.
    pub fn cli_ok(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cli(i, args)?;
        if !out.status.success() {
            bail!(
                "`{} {}` on {} failed ({}): {}",
                self.label(),
                args.join(" "),
                self.nodes[i].name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Agent 0 joins every other agent (one CLI call).
    pub fn join_all_through_first(&self) -> anyhow::Result<()> {
        let addrs: Vec<String> = self.nodes[1..]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["join"];
        args.extend(addrs.iter().map(String::as_str));
        self.cli_ok(0, &args).map(drop)
    }

    /// Every other agent joins agent 0, all at once (N - 1 CLI calls run concurrently).
    pub fn join_each_to_first(&self) -> anyhow::Result<()> {
        let seed = format!("127.0.0.1:{}", self.nodes[0].port);
        let mut children = Vec::new();
        for i in 1..self.nodes.len() {
            let child = self
                .command(i, &["join", &seed])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("cannot run the join CLI")?;
            children.push((i, child));
        }
        for (i, child) in children {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "join of {} failed: {}",
                    self.nodes[i].name,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    /// `(name, status)` of every member as agent `i` lists them.
    pub fn members(&self, i: usize) -> anyhow::Result<Vec<(String, String)>> {
        let out = match self.flavor {
            Flavor::Rumor { .. } => self.cli_ok(i, &["members", "--format", "json"])?,
            Flavor::Serf { .. } => self.cli_ok(i, &["members", "-format=json"])?,
        };
        let json: Value = serde_json::from_str(&out)
            .with_context(|| format!("members printed invalid JSON: {out}"))?;
        let list = json["members"]
            .as_array()
            .with_context(|| format!("no members array in {out}"))?;
        Ok(list
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or_default().to_owned(),
                    m["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// Sends the user event `name` from agent `i`, without coalescing.
    pub fn send_event(&self, i: usize, name: &str) -> anyhow::Result<()> {
        let args = match self.flavor {
            Flavor::Rumor { .. } => vec!["event", "--coalesce=false", name],
            Flavor::Serf { .. } => vec!["event", "-coalesce=false", name],
        };
        self.cli_ok(i, &args).map(drop)
    }

    /// When agent `i` first received each user event named `name` it still lists, by Lamport
    /// time (unix ns), from `rumor events --format json`. `None` for Serf, which does not
    /// record it.
    pub fn received(&self, i: usize, name: &str) -> anyhow::Result<Option<BTreeMap<u64, i128>>> {
        if let Flavor::Serf { .. } = self.flavor {
            return Ok(None);
        }
        let out = self.cli_ok(i, &["events", "--format", "json"])?;
        let json: Value = serde_json::from_str(&out)
            .with_context(|| format!("events printed invalid JSON: {out}"))?;
        let events = json["events"]
            .as_array()
            .with_context(|| format!("no events array in {out}"))?;
        let mut by_ltime = BTreeMap::new();
        for e in events.iter().filter(|e| e["name"] == name) {
            let ltime = e["ltime"]
                .as_u64()
                .with_context(|| format!("no ltime in {e}"))?;
            let ns = e["received_unix_ns"]
                .as_u64()
                .with_context(|| format!("no received_unix_ns in {e}"))?;
            by_ltime.insert(ltime, i128::from(ns));
        }
        Ok(Some(by_ltime))
    }

    /// Runs the query `name` from agent `i` and times the answers as the CLI prints them.
    pub fn query(&self, i: usize, name: &str, expected: usize) -> anyhow::Result<QueryTiming> {
        let mut cmd = match self.flavor {
            Flavor::Rumor { .. } => self.command(i, &["query", name]),
            // Serf's query always waits out its timeout; keep it short.
            Flavor::Serf { .. } => self.command(i, &["query", "-timeout=3s", name]),
        };
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run the query CLI")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut answers = 0;
        let mut all_answered = None;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line.starts_with("Response from") {
                answers += 1;
                if answers == expected {
                    all_answered = Some(started.elapsed());
                }
            }
        }
        child.wait()?;
        Ok(QueryTiming {
            all_answered,
            returned: started.elapsed(),
            answers,
        })
    }

    /// Kills agent `i` with SIGKILL.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.kill();
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.wait();
            }
        }
    }
}
