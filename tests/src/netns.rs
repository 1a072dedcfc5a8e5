//! Hosts as Linux network namespaces on one bridge, real agents on them, and real network
//! faults (partitions, packet loss) made with iptables inside the namespaces.
//!
//! Layout of one [`Net`] named `PREFIX-PID-N` (PID: this test process, N: a per-process
//! counter):
//!
//! ```text
//!   namespace PREFIX-PID-N-sw:  bridge br0, ports p0 .. p(k-1)
//!   namespace PREFIX-PID-N-i:   lo, eth0 = 10.A.B.(11+i)/24, veth peer of p<i>
//! ```
//!
//! The bridge lives in a namespace of its own, so nothing is added to the machine's own
//! network namespace: no interface names to collide with, no host firewall in the way (Docker's
//! `FORWARD DROP` policy would otherwise drop bridged traffic when `br_netfilter` is loaded),
//! and no route from the test hosts to anything but each other (they have no default route, so
//! an agent can only ever reach the addresses this harness created).
//!
//! Faults live in two iptables chains in every host's `INPUT` (for packets arriving on eth0):
//! `rumor-partition` and `rumor-loss`. Dropping on the receiving side only is deliberate: a
//! `DROP` in `OUTPUT` makes the sender's `sendto` fail with `EPERM` at once, which no real
//! network does, whereas a drop in `INPUT` is silent, like a lost packet. Loss with probability
//! `p` in every receiver's `INPUT` is therefore exactly `p` per direction of every link, and a
//! partition drops both directions because each side's `INPUT` drops the other side's source
//! addresses (UDP and TCP alike).
//!
//! [`Net`]'s `Drop` kills whatever still runs in its namespaces (only processes this harness
//! started can be there) and deletes them, which also deletes the veths and the bridge; it runs
//! when a test panics too. Leftovers of crashed earlier runs with the same prefix (namespaces
//! whose owning process is gone) are removed by the first [`Net::new`] of a process.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::agent::{CLI_TIMEOUT, Member, START_TIMEOUT, test_tempdir};
use crate::binary::rumor_bin;
use crate::process::AgentProcess;
use crate::process::run_with_timeout;
use crate::skip_or_fail;
use crate::wait::POLL;

/// The gossip port of every agent (each host has its own address).
pub const GOSSIP_PORT: u16 = 7946;

/// The iptables chain holding partition rules, jumped to from `INPUT` for eth0.
pub const PARTITION_CHAIN: &str = "rumor-partition";

/// The iptables chain holding the loss rule, jumped to from `INPUT` for eth0.
pub const LOSS_CHAIN: &str = "rumor-loss";

/// How long one `ip` or `iptables-restore` invocation may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT_NET: AtomicU32 = AtomicU32::new(0);
static CLEANED_PREFIXES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A bridge and `hosts` network namespaces attached to it. See the module docs.
pub struct Net {
    name: String,
    switch: String,
    hosts: Vec<Host>,
}

/// One namespace on a [`Net`]: its name and address.
#[derive(Debug, Clone)]
pub struct Host {
    index: usize,
    ns: String,
    ip: Ipv4Addr,
}

impl Net {
    /// Creates a bridge and `hosts` namespaces named after `prefix` (1–8 of `[a-z0-9]`, one per
    /// test, so stale namespaces can be traced to their test).
    ///
    /// Returns `None` after [`skip_or_fail`] when this machine cannot do it (not root, `ip` or
    /// `iptables-restore` missing); with `RUMOR_REQUIRE_ALL=1` that is a failure instead. Panics
    /// if the tools are there but setting up the network fails.
    pub fn new(prefix: &str, hosts: usize) -> Option<Net> {
        if let Err(why) = prerequisites() {
            skip_or_fail(&format!("network namespace tests: {why}"));
            return None;
        }
        Some(Net::create(prefix, hosts).unwrap_or_else(|e| panic!("{e}")))
    }

    fn create(prefix: &str, hosts: usize) -> Result<Net, String> {
        check_prefix(prefix)?;
        assert!((1..=200).contains(&hosts), "1..=200 hosts, not {hosts}");
        clean_stale_once(prefix);
        let pid = std::process::id();
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let name = net_name(prefix, pid, n);
        let mut net = Net {
            switch: format!("{name}-sw"),
            hosts: (0..hosts)
                .map(|i| Host {
                    index: i,
                    ns: host_ns(&name, i),
                    ip: host_ip(pid, n, i),
                })
                .collect(),
            name,
        };
        // From here on, Drop removes whatever was created.
        let namespaces: Vec<String> = net.namespaces();
        let result = ip_batch(&[], &netns_add_commands(&namespaces))
            .and_then(|()| ip_batch(&["-n", &net.switch], &switch_commands(&namespaces[1..])))
            .and_then(|()| {
                net.hosts.iter().try_for_each(|h| {
                    ip_batch(&["-n", &h.ns], &host_commands(h.ip))?;
                    iptables_restore(&h.ns, &base_rules(), false)
                })
            });
        if let Err(e) = result {
            net.destroy();
            net.hosts.clear();
            return Err(format!("cannot set up network {}: {e}", net.name));
        }
        eprintln!(
            "net {}: {} hosts on {}.0/24",
            net.name,
            net.hosts.len(),
            subnet_prefix(pid, n)
        );
        Ok(net)
    }

    /// `PREFIX-PID-N`, the start of every namespace name of this network.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Drops all traffic between the hosts of `a` and those of `b`, both directions, UDP and
    /// TCP. Replaces any earlier partition.
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let blocked = partition_blocks(self.hosts.len(), a, b);
        for (host, peers) in self.hosts.iter().zip(blocked) {
            let ips: Vec<Ipv4Addr> = peers.iter().map(|&j| self.hosts[j].ip).collect();
            self.restore(host, &partition_rules(&ips));
        }
    }

    /// Removes every partition rule.
    pub fn heal(&self) {
        for host in &self.hosts {
            self.restore(host, &partition_rules(&[]));
        }
    }

    /// Drops each packet arriving at any host with probability `p` (0..=1): `p` loss on every
    /// link in each direction. Replaces any earlier loss setting.
    pub fn loss(&self, p: f64) {
        let rules = loss_rules(Some(p));
        for host in &self.hosts {
            self.restore(host, &rules);
        }
    }

    /// Removes the loss rule.
    pub fn clear_loss(&self) {
        for host in &self.hosts {
            self.restore(host, &loss_rules(None));
        }
    }

    /// Packet counters of the fault rules, summed over every host, read from
    /// `iptables-save -c`. Flushing a chain ([`Net::heal`], [`Net::clear_loss`]) resets its
    /// counts, so read them before.
    pub fn counters(&self) -> FaultCounters {
        let mut total = FaultCounters::default();
        for host in &self.hosts {
            let out = run_with_timeout(
                Command::new("ip").args(["netns", "exec", &host.ns, "iptables-save", "-c"]),
                TOOL_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("net {}: {e}", self.name));
            total.add(parse_counters(&String::from_utf8_lossy(&out.stdout)));
        }
        total
    }

    fn restore(&self, host: &Host, rules: &str) {
        iptables_restore(&host.ns, rules, true)
            .unwrap_or_else(|e| panic!("net {}: {e}\nrules:\n{rules}", self.name));
    }

    fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch.clone())
            .chain(self.hosts.iter().map(|h| h.ns.clone()))
            .collect()
    }

    fn destroy(&self) {
        remove_namespaces(&self.namespaces());
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// What the fault rules did, in packets (see [`Net::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounters {
    /// Packets that arrived on eth0 past the partition rules (the loss rule's candidates).
    pub arrived: u64,
    /// Packets the loss rule dropped.
    pub lost: u64,
    /// Packets the partition rules dropped.
    pub cut: u64,
}

impl FaultCounters {
    fn add(&mut self, other: FaultCounters) {
        self.arrived += other.arrived;
        self.lost += other.lost;
        self.cut += other.cut;
    }

    /// `lost / arrived`, the loss rate actually applied.
    pub fn loss_rate(&self) -> f64 {
        if self.arrived == 0 {
            0.0
        } else {
            self.lost as f64 / self.arrived as f64
        }
    }
}

impl Host {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The gossip address agents on this host bind: `IP:7946`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GOSSIP_PORT))
    }

    /// Starts `rumor agent --node NAME --bind IP:7946 ...` inside this host's namespace (see
    /// [`NsAgent::start`]).
    pub fn spawn_agent(&self, name: &str, extra: &[&str]) -> NsAgent {
        NsAgent::start(self, name, extra)
    }
}

/// A `rumor agent` running in a network namespace: `ip netns exec NS rumor agent --node NAME
/// --bind IP:7946 --data-dir DIR --control DIR/control.sock --log-level debug --profile local
/// [extra...]` (without `--profile local` when `extra` has its own `--profile`). Client commands run in the machine's own namespace against the Unix socket.
/// Dropping it kills the process; if the test is panicking it first prints the log's tail and
/// keeps the data directory.
pub struct NsAgent {
    name: String,
    ns: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    extra: Vec<String>,
    process: AgentProcess,
    tmp: Option<TempDir>,
}

impl NsAgent {
    /// Starts the agent on `host` and waits until its control socket answers `rumor info`.
    /// Panics with the log's tail if it exits first or does not answer within [`START_TIMEOUT`].
    pub fn start(host: &Host, name: &str, extra: &[&str]) -> NsAgent {
        let tmp = test_tempdir();
        let data_dir = tmp.path().join(name);
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let mut agent = NsAgent {
            name: name.to_owned(),
            ns: host.ns.clone(),
            ip: host.ip,
            data_dir: data_dir.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            process: AgentProcess::new(name, data_dir.join("agent.log")),
            tmp: Some(tmp),
        };
        if let Err(why) = agent.spawn_and_wait() {
            panic!("agent {name} did not start: {why}");
        }
        agent
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The gossip address, `IP:7946` (what `--join` takes).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GOSSIP_PORT))
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

    /// The agent's process id while it runs (`ip netns exec` execs the agent in place).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Runs `rumor ARGS` against this agent (see [`cli_at`]).
    pub fn cli(&self, args: &[&str]) -> Output {
        cli_at(&self.control_path(), args).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Like [`NsAgent::cli`], but returns stdout, or the command line and stderr on failure.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        cli_stdout(&self.name, &self.control_path(), args)
    }

    /// Like [`NsAgent::cli`], but panics unless it succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// This agent's member list; `Err` describes a failed command or an unexpected shape.
    pub fn members(&self) -> Result<Vec<Member>, String> {
        let out = self.try_cli(&["members", "--format", "json"])?;
        parse_members(&out)
    }

    /// `rumor info --format json`, parsed.
    pub fn info(&self) -> Result<Value, String> {
        let out = self.try_cli(&["info", "--format", "json"])?;
        serde_json::from_str(&out).map_err(|e| format!("`rumor info` printed invalid JSON ({e})"))
    }

    /// Starts `rumor monitor --format json` against this agent.
    pub fn watch(&self) -> Watch {
        Watch::start(&self.name, &self.control_path())
    }

    /// Kills the process with SIGKILL (no graceful leave) and reaps it.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Sends SIGTERM (a graceful leave) and waits up to `timeout` for the exit; panics if the
    /// agent is still running then.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self
            .pid()
            .expect("terminate() of an agent that is not running");
        self.process.note("sending SIGTERM");
        let out = run_with_timeout(
            Command::new("kill").args(["-TERM", &pid.to_string()]),
            CLI_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert!(out.status.success(), "kill -TERM {pid} failed: {out:?}");
        self.wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{} still runs {timeout:?} after SIGTERM; log:\n{}",
                self.name,
                self.log_tail(crate::LOG_TAIL_LINES)
            )
        })
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Starts a new process with the same name, address, data dir and extra arguments, and
    /// waits until it serves. The old one must be gone ([`NsAgent::kill9`],
    /// [`NsAgent::terminate`]).
    pub fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "restart of {} while it runs: kill9() or terminate() first",
            self.name
        );
        if let Err(why) = self.spawn_and_wait() {
            panic!("agent {} did not restart: {why}", self.name);
        }
    }

    /// Like [`NsAgent::restart`] with new extra arguments (kept for later restarts).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Everything the agent's processes wrote, with the harness's notes between them.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "netns".into(),
            "exec".into(),
            self.ns.clone().into(),
            rumor_bin().into(),
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
        args
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let args = self.args();
        let line: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        self.process
            .note(&format!("starting ip {}", line.join(" ")));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open its log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open its log: {e}"))?;
        let mut cmd = Command::new("ip");
        clear_rumor_env(&mut cmd);
        let child = cmd
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("cannot spawn ip netns exec: {e}"))?;
        self.process.started(child);
        let start = Instant::now();
        loop {
            if !self.is_running() {
                return Err(format!(
                    "it exited ({}) before serving; log {}:\n{}",
                    self.process
                        .exit_status()
                        .map_or("unknown status".into(), |s| s.to_string()),
                    self.log_path().display(),
                    self.log_tail(crate::LOG_TAIL_LINES)
                ));
            }
            let last = match self.try_cli(&["info"]) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if start.elapsed() > START_TIMEOUT {
                self.kill9();
                return Err(format!(
                    "no answer within {START_TIMEOUT:?} (last: {last}); log:\n{}",
                    self.log_tail(crate::LOG_TAIL_LINES)
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        let place = format!("{}:{GOSSIP_PORT} in {}", self.ip, self.ns);
        self.process.stop_on_drop(&place, &mut self.tmp);
    }
}

/// Runs `rumor SUBCOMMAND --control CONTROL REST...` in this namespace, with no inherited
/// `RUMOR_*` variable; errs if it hangs for [`CLI_TIMEOUT`].
pub fn cli_at(control: &Path, args: &[&str]) -> Result<Output, String> {
    let mut full: Vec<OsString> = Vec::with_capacity(args.len() + 2);
    if let Some((sub, rest)) = args.split_first() {
        full.push(sub.into());
        full.push("--control".into());
        full.push(control.into());
        full.extend(rest.iter().map(OsString::from));
    }
    let mut cmd = Command::new(rumor_bin());
    clear_rumor_env(&mut cmd);
    cmd.args(&full);
    run_with_timeout(&mut cmd, CLI_TIMEOUT)
}

/// [`cli_at`], returning stdout, or an error naming `who`, the command and its stderr.
pub fn cli_stdout(who: &str, control: &Path, args: &[&str]) -> Result<String, String> {
    let out = cli_at(control, args).map_err(|e| format!("{who}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`rumor {}` on {who} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Parses `rumor members --format json`.
pub fn parse_members(out: &str) -> Result<Vec<Member>, String> {
    let json: Value = serde_json::from_str(out)
        .map_err(|e| format!("`rumor members --format json` printed invalid JSON ({e}): {out}"))?;
    json["members"]
        .as_array()
        .ok_or_else(|| format!("no \"members\" array in {json}"))?
        .iter()
        .map(Member::from_json)
        .collect()
}

/// The resident memory of process `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `rumor monitor --format json --log-level LEVEL` against one agent, every line kept with the
/// moment it arrived (the stream itself carries no time for events).
pub struct Watch {
    agent: String,
    child: Child,
    lines: std::sync::Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    /// Starts streaming at level `info`. The subscription may take a moment: a test that must
    /// not miss a line first waits for some line to arrive (a warm-up event).
    pub fn start(agent: &str, control: &Path) -> Watch {
        let mut cmd = Command::new(rumor_bin());
        clear_rumor_env(&mut cmd);
        let mut child = cmd
            .arg("monitor")
            .arg("--control")
            .arg(control)
            .args(["--format", "json", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rumor monitor for {agent}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), line));
            }
        });
        Watch {
            agent: agent.to_owned(),
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Every JSON line so far with its arrival time.
    pub fn events(&self) -> Vec<(Instant, Value)> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(t, l)| serde_json::from_str(l).ok().map(|v| (*t, v)))
            .collect()
    }

    /// The first line matching `pred`, with its arrival time.
    pub fn first(&self, pred: impl Fn(&Value) -> bool) -> Option<(Instant, Value)> {
        self.events().into_iter().find(|(_, v)| pred(v))
    }

    /// How many lines the stream said it dropped (`{"type":"lagged","missed":N}`): a watch
    /// that lagged may have missed what a test looks for.
    pub fn missed(&self) -> u64 {
        self.events()
            .iter()
            .filter(|(_, v)| v["type"] == "lagged")
            .filter_map(|(_, v)| v["missed"].as_u64())
            .sum()
    }

    /// Whether the `rumor monitor` process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A member event line of `rumor monitor`: `{"type":"event","event":{"type":"member",
/// "kind":KIND,"members":[{"name":...}, ...]}}`; returns the names if `kind` matches.
pub fn member_event_names(line: &Value, kind: &str) -> Vec<String> {
    if line["type"] != "event" || line["event"]["type"] != "member" || line["event"]["kind"] != kind
    {
        return Vec::new();
    }
    line["event"]["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---- names, addresses and rules: pure functions, unit-tested below ----

/// `PREFIX-PID-N`.
fn net_name(prefix: &str, pid: u32, n: u32) -> String {
    format!("{prefix}-{pid}-{n}")
}

fn host_ns(net: &str, i: usize) -> String {
    format!("{net}-{i}")
}

/// The first three octets of a network's /24: `10.(100 + pid % 100).(n % 256)`. Two networks
/// never share a bridge, so a repeat (after 256 networks in one process, or between processes)
/// would not mix their traffic; distinct subnets just make logs unambiguous.
fn subnet_prefix(pid: u32, n: u32) -> String {
    format!("10.{}.{}", 100 + pid % 100, n % 256)
}

fn host_ip(pid: u32, n: u32, i: usize) -> Ipv4Addr {
    let last = u8::try_from(11 + i).expect("at most 200 hosts");
    Ipv4Addr::new(10, (100 + pid % 100) as u8, (n % 256) as u8, last)
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if (1..=8).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "network prefix {prefix:?}: use 1-8 characters of [a-z0-9]"
        ))
    }
}

/// The process that created namespace `ns` if it is one of `prefix`'s (`PREFIX-PID-...`).
fn owner_pid(prefix: &str, ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(prefix)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

fn netns_add_commands(namespaces: &[String]) -> Vec<String> {
    namespaces
        .iter()
        .map(|ns| format!("netns add {ns}"))
        .collect()
}

/// Run inside the switch namespace: the bridge, and per host a veth whose peer `eth0` goes
/// straight into the host's namespace. Interface names are per namespace, so short fixed ones
/// (≤ 15 bytes) never collide with other tests.
fn switch_commands(host_namespaces: &[String]) -> Vec<String> {
    let mut cmds = vec![
        "link add name br0 type bridge".to_owned(),
        "link set br0 up".to_owned(),
    ];
    cmds.extend(host_namespaces.iter().enumerate().flat_map(|(i, ns)| {
        [
            format!("link add name p{i} type veth peer name eth0 netns {ns}"),
            format!("link set p{i} master br0 up"),
        ]
    }));
    cmds
}

/// Run inside a host namespace.
fn host_commands(ip: Ipv4Addr) -> Vec<String> {
    vec![
        "link set lo up".to_owned(),
        "link set eth0 up".to_owned(),
        format!("addr add {ip}/24 dev eth0"),
    ]
}

/// The filter table of a fresh host: the two fault chains, jumped to for packets from eth0.
fn base_rules() -> String {
    format!(
        "*filter\n:{PARTITION_CHAIN} - [0:0]\n:{LOSS_CHAIN} - [0:0]\n\
         -A INPUT -i eth0 -j {PARTITION_CHAIN}\n-A INPUT -i eth0 -j {LOSS_CHAIN}\nCOMMIT\n"
    )
}

/// Replaces the partition chain with a DROP per blocked source address.
fn partition_rules(blocked: &[Ipv4Addr]) -> String {
    let mut rules = format!("*filter\n-F {PARTITION_CHAIN}\n");
    for ip in blocked {
        rules.push_str(&format!("-A {PARTITION_CHAIN} -s {ip}/32 -j DROP\n"));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Replaces the loss chain with one random DROP of probability `p`, or nothing.
fn loss_rules(p: Option<f64>) -> String {
    let mut rules = format!("*filter\n-F {LOSS_CHAIN}\n");
    if let Some(p) = p {
        assert!(
            (0.0..=1.0).contains(&p),
            "loss probability {p} not in 0..=1"
        );
        rules.push_str(&format!(
            "-A {LOSS_CHAIN} -m statistic --mode random --probability {p} -j DROP\n"
        ));
    }
    rules.push_str("COMMIT\n");
    rules
}

/// Sums the packet counts of `iptables-save -c` lines (`[PACKETS:BYTES] -A CHAIN ...`) for
/// the fault rules.
fn parse_counters(save: &str) -> FaultCounters {
    let mut c = FaultCounters::default();
    for line in save.lines() {
        let Some((count, rule)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        let packets: u64 = count
            .split(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if rule.starts_with("-A INPUT ") && rule.ends_with(&format!("-j {LOSS_CHAIN}")) {
            c.arrived += packets;
        } else if rule.starts_with(&format!("-A {LOSS_CHAIN} ")) && rule.ends_with("-j DROP") {
            c.lost += packets;
        } else if rule.starts_with(&format!("-A {PARTITION_CHAIN} ")) && rule.ends_with("-j DROP") {
            c.cut += packets;
        }
    }
    c
}

/// For each of `hosts` hosts, the hosts whose packets it must drop to split `a` from `b`.
fn partition_blocks(hosts: usize, a: &[usize], b: &[usize]) -> Vec<Vec<usize>> {
    for &i in a.iter().chain(b) {
        assert!(i < hosts, "host {i} out of range (network of {hosts})");
    }
    assert!(
        a.iter().all(|i| !b.contains(i)),
        "partition sides overlap: {a:?} / {b:?}"
    );
    (0..hosts)
        .map(|i| {
            if a.contains(&i) {
                b.to_vec()
            } else if b.contains(&i) {
                a.to_vec()
            } else {
                Vec::new()
            }
        })
        .collect()
}

// ---- running the tools ----

/// Why this machine cannot run namespace tests, if it cannot.
fn prerequisites() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!(
            "they need root (effective uid is {euid}); run the tests as root"
        ));
    }
    for (tool, arg) in [("ip", "-V"), ("iptables-restore", "--version")] {
        match run_with_timeout(Command::new(tool).arg(arg), TOOL_TIMEOUT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`{tool} {arg}` failed: {out:?}")),
            Err(e) => {
                return Err(format!(
                    "`{tool}` is not usable ({e}); install iproute2 and iptables"
                ));
            }
        }
    }
    Ok(())
}

/// `ip [GLOBAL...] -batch -` with `commands` on stdin. Fails naming the commands and ip's
/// stderr.
fn ip_batch(global: &[&str], commands: &[String]) -> Result<(), String> {
    run_stdin(
        "ip",
        &[global, &["-batch", "-"]].concat(),
        &commands.join("\n"),
    )
}

fn iptables_restore(ns: &str, rules: &str, noflush: bool) -> Result<(), String> {
    let mut args = vec!["netns", "exec", ns, "iptables-restore"];
    if noflush {
        args.push("--noflush");
    }
    run_stdin("ip", &args, rules)
}

fn run_stdin(program: &str, args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program} {}: writing stdin: {e}", args.join(" ")))?;
    }
    let start = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if start.elapsed() > TOOL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} {} hung for {TOOL_TIMEOUT:?}",
                args.join(" ")
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed ({}) on input:\n{input}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Kills every process left in `namespaces` (only this harness starts processes there) and
/// deletes the namespaces; their interfaces, veths and the bridge go with them. Best effort:
/// problems are printed, never raised (this runs in `Drop`).
fn remove_namespaces(namespaces: &[String]) {
    for ns in namespaces {
        for pid in netns_pids(ns) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
    let cmds: Vec<String> = namespaces
        .iter()
        .map(|ns| format!("netns delete {ns}"))
        .collect();
    if let Err(e) = ip_batch(&["-force"], &cmds) {
        let missing_only = !e.contains("Device or resource busy") && e.contains("No such file");
        if !missing_only {
            eprintln!("warning: cleaning up network namespaces: {e}");
        }
    }
}

fn netns_pids(ns: &str) -> Vec<u32> {
    run_with_timeout(Command::new("ip").args(["netns", "pids", ns]), TOOL_TIMEOUT)
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Once per process and prefix: removes namespaces `PREFIX-PID-*` whose process is gone.
fn clean_stale_once(prefix: &str) {
    let mut done = CLEANED_PREFIXES.lock().unwrap_or_else(|p| p.into_inner());
    if !done.insert(prefix.to_owned()) {
        return;
    }
    let Ok(out) = run_with_timeout(Command::new("ip").args(["netns", "list"]), TOOL_TIMEOUT) else {
        return;
    };
    let me = std::process::id();
    let stale: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| {
            owner_pid(prefix, ns)
                .is_some_and(|pid| pid != me && !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_owned)
        .collect();
    if !stale.is_empty() {
        eprintln!("removing stale network namespaces of earlier runs: {stale:?}");
        remove_namespaces(&stale);
    }
}

fn clear_rumor_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RUMOR_") {
            cmd.env_remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_trace_back_to_their_process() {
        let net = net_name("rfpart", 4_194_304, 7);
        assert_eq!(net, "rfpart-4194304-7");
        let host = host_ns(&net, 5);
        assert_eq!(owner_pid("rfpart", &host), Some(4_194_304));
        assert_eq!(owner_pid("rfpart", &format!("{net}-sw")), Some(4_194_304));
        assert_eq!(owner_pid("rf", &host), None, "another prefix's namespace");
        assert_eq!(owner_pid("rfpart", "rfpartx-1-2-3"), None);
        assert!(check_prefix("rfloss").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("Upper").is_err());
        assert!(check_prefix("has-dash").is_err());
        assert!(check_prefix("ninechars").is_err());
        // Interface names are fixed per namespace and within Linux's 15 bytes.
        let hosts: Vec<String> = (0..200).map(|i| host_ns(&net, i)).collect();
        for cmd in switch_commands(&hosts) {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            for pair in words.windows(2) {
                if pair[0] == "name" {
                    assert!(pair[1].len() <= 15, "interface name {}", pair[1]);
                }
            }
        }
    }

    #[test]
    fn addresses_are_private_and_distinct_per_host_and_network() {
        let a = host_ip(1234, 0, 0);
        assert!(a.is_private(), "{a}");
        assert_eq!(a, Ipv4Addr::new(10, 134, 0, 11));
        assert_eq!(host_ip(1234, 0, 199), Ipv4Addr::new(10, 134, 0, 210));
        assert_ne!(host_ip(1234, 1, 0), a, "another network of this process");
        assert_eq!(subnet_prefix(1234, 1), "10.134.1");
        assert_eq!(host_commands(a)[2], "addr add 10.134.0.11/24 dev eth0");
    }

    #[test]
    fn setup_commands() {
        assert_eq!(
            netns_add_commands(&["x-1-0-sw".into(), "x-1-0-0".into()]),
            ["netns add x-1-0-sw", "netns add x-1-0-0"]
        );
        let sw = switch_commands(&["x-1-0-0".into(), "x-1-0-1".into()]);
        assert_eq!(sw[0], "link add name br0 type bridge");
        assert_eq!(
            sw[2],
            "link add name p0 type veth peer name eth0 netns x-1-0-0"
        );
        assert_eq!(sw[5], "link set p1 master br0 up");
    }

    #[test]
    fn rules() {
        let base = base_rules();
        assert!(base.contains(":rumor-partition - [0:0]\n"), "{base}");
        assert!(base.contains("-A INPUT -i eth0 -j rumor-loss\n"), "{base}");
        assert!(base.ends_with("COMMIT\n"));
        let p = partition_rules(&[Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(10, 1, 2, 4)]);
        assert_eq!(
            p,
            "*filter\n-F rumor-partition\n-A rumor-partition -s 10.1.2.3/32 -j DROP\n\
             -A rumor-partition -s 10.1.2.4/32 -j DROP\nCOMMIT\n"
        );
        assert_eq!(
            partition_rules(&[]),
            "*filter\n-F rumor-partition\nCOMMIT\n"
        );
        assert_eq!(
            loss_rules(Some(0.1)),
            "*filter\n-F rumor-loss\n-A rumor-loss -m statistic --mode random \
             --probability 0.1 -j DROP\nCOMMIT\n"
        );
        assert_eq!(loss_rules(None), "*filter\n-F rumor-loss\nCOMMIT\n");
    }

    #[test]
    fn counters_from_iptables_save() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:rumor-loss - [0:0]\n\
            [120:9000] -A INPUT -i eth0 -j rumor-partition\n\
            [100:8000] -A INPUT -i eth0 -j rumor-loss\n\
            [20:1000] -A rumor-partition -s 10.1.2.3/32 -j DROP\n\
            [11:700] -A rumor-loss -m statistic --mode random --probability 0.10000000009 -j DROP\n\
            COMMIT\n";
        let c = parse_counters(save);
        assert_eq!(
            c,
            FaultCounters {
                arrived: 100,
                lost: 11,
                cut: 20
            }
        );
        assert!((c.loss_rate() - 0.11).abs() < 1e-9);
        assert_eq!(FaultCounters::default().loss_rate(), 0.0);
    }

    #[test]
    fn partition_blocks_both_directions_and_spares_bystanders() {
        let b = partition_blocks(7, &[0, 1, 2], &[3, 4, 5]);
        assert_eq!(b[0], [3, 4, 5]);
        assert_eq!(b[4], [0, 1, 2]);
        assert!(b[6].is_empty());
    }

    #[test]
    #[should_panic(expected = "overlap")]
    fn overlapping_sides_are_refused() {
        partition_blocks(4, &[0, 1], &[1, 2]);
    }

    #[test]
    fn member_events_from_monitor_lines() {
        let line = serde_json::json!({"type":"event","event":{"type":"member","kind":"failed",
            "members":[{"name":"n1","addr":"10.0.0.1","port":7946,"tags":{}}]}});
        assert_eq!(member_event_names(&line, "failed"), ["n1"]);
        assert!(member_event_names(&line, "join").is_empty());
        let log = serde_json::json!({"type":"log","message":"failed"});
        assert!(member_event_names(&log, "failed").is_empty());
    }

    #[test]
    fn rss_of_this_process() {
        let rss = rss_bytes(std::process::id()).expect("VmRSS readable");
        assert!(rss > 0);
    }
}
