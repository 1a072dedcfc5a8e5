//! What the benchmark reads from and does to this machine: /proc figures, an iptables
//! byte counter for the agents' ports, Ctrl-C, and the release build of `rumor`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use crate::binary::{tail, workspace_root};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C (SIGINT) and SIGTERM set a flag that [`check_interrupt`] turns into an error,
/// so the benchmark unwinds and every agent and iptables rule is cleaned up on the way out.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// `Err` once Ctrl-C or SIGTERM was received.
pub fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early with an error on Ctrl-C.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() {
        check_interrupt()?;
        let now = left.min(step);
        std::thread::sleep(now);
        left -= now;
    }
    check_interrupt()
}

/// Wall-clock time in unix nanoseconds (the clock `date +%s%N` and the agents use).
pub fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Resident memory of a process, in MB: VmRSS from /proc/PID/status.
pub fn rss_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "VmRSS:")
}

/// The part of the resident memory that is the process's own (RssAnon: heap, stacks), in
/// MB; the rest (RssFile) is mostly program text, shared by every agent on the machine.
pub fn rss_anon_mb(pid: u32) -> Option<f64> {
    status_mb(pid, "RssAnon:")
}

fn status_mb(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The fields of a `/proc/.../stat` file from field 3 (state) on: index `k - 3` is field `k`
/// of proc(5). What comes before is the pid and the command name, which may contain spaces.
pub fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time a process has used (user + system), from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = stat_fields(&format!("/proc/{pid}/stat"))?;
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some(Duration::from_secs_f64((utime + stime) as f64 / ticks))
}

/// How one thread is scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadSched {
    pub tid: u32,
    /// Its name (`comm`).
    pub name: String,
    pub nice: i32,
    /// `SCHED_OTHER` (0), `SCHED_RR` (2), ...
    pub policy: i32,
}

/// Every thread of process `pid`, with its nice value and scheduling policy (fields 19 and 41
/// of each thread's stat).
pub fn threads(pid: u32) -> Vec<ThreadSched> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let fields = stat_fields(&t.path().join("stat").to_string_lossy())?;
            Some(ThreadSched {
                tid: t.file_name().to_str()?.parse().ok()?,
                name: std::fs::read_to_string(t.path().join("comm"))
                    .ok()?
                    .trim()
                    .to_owned(),
                nice: fields.get(19 - 3)?.parse().ok()?,
                policy: fields.get(41 - 3)?.parse().ok()?,
            })
        })
        .collect()
}

/// The CPU model and memory of this machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cores} cores, {cpu}, {mem_gb:.0} GB RAM")
}

/// Counts the bytes the agents send, with an iptables chain hooked into OUTPUT: one rule per
/// gossip port for UDP from it and TCP to or from it (push-pull), each rule counting a packet
/// at most once. On loopback every packet passes OUTPUT once. Bytes are IP packet lengths
/// (IP and UDP/TCP headers included). Removed on drop.
pub struct TrafficCounter {
    chain: String,
}

impl TrafficCounter {
    /// Installs the chain; fails if iptables is missing or we are not root.
    pub fn install(label: &str, ports: &[u16]) -> anyhow::Result<TrafficCounter> {
        let chain = format!("BENCH_{}_{}", label.to_uppercase(), std::process::id());
        iptables(&["-N", &chain])?;
        let counter = TrafficCounter { chain };
        iptables(&["-I", "OUTPUT", "-j", &counter.chain])?;
        for port in ports {
            let p = port.to_string();
            for (proto, dir) in [("udp", "--sport"), ("tcp", "--sport"), ("tcp", "--dport")] {
                iptables(&["-A", &counter.chain, "-p", proto, dir, &p, "-j", "RETURN"])?;
            }
        }
        Ok(counter)
    }

    /// Bytes counted since the chain was installed: (UDP, TCP).
    pub fn bytes(&self) -> anyhow::Result<(u64, u64)> {
        let out = iptables(&["-vxnL", &self.chain])?;
        let (mut udp, mut tcp) = (0, 0);
        for line in out.lines().skip(2) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(bytes) = fields.get(1).and_then(|b| b.parse::<u64>().ok()) else {
                continue;
            };
            // The protocol column shows a name or a number (17 = UDP, 6 = TCP).
            match fields.get(3) {
                Some(&("udp" | "17")) => udp += bytes,
                _ => tcp += bytes,
            }
        }
        Ok((udp, tcp))
    }
}

impl Drop for TrafficCounter {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

fn iptables(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .context("cannot run iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The release `rumor` binary: `RUMOR_BIN` if set, else built with
/// `cargo build --release -p rumor --bin rumor` in the workspace.
pub fn release_rumor() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("RUMOR_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("RUMOR_BIN={} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    eprintln!("building the release rumor binary (cargo build --release -p rumor)...");
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "rumor",
            "--bin",
            "rumor",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .with_context(|| format!("cannot run {cargo:?} to build rumor"))?;
    if !output.status.success() {
        bail!(
            "`cargo build --release -p rumor` failed:\n{}",
            tail(&String::from_utf8_lossy(&output.stderr), 40)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rumor")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built rumor but reported no executable")
}

/// `serf` on the PATH, if installed.
pub fn find_serf() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("serf"))
        .find(|p| p.is_file())
}
