//! Running `ip` and `iptables-restore` for a [`super::Net`], and removing namespaces: those
//! of a dropped network, and those crashed earlier runs left behind.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::owner_pid;
use crate::process::run_with_timeout;

/// How long one `ip` or `iptables-restore` invocation may take.
pub(super) const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

static CLEANED_PREFIXES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Why this machine cannot run namespace tests, if it cannot.
pub(super) fn prerequisites() -> Result<(), String> {
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
pub(super) fn ip_batch(global: &[&str], commands: &[String]) -> Result<(), String> {
    run_stdin(
        "ip",
        &[global, &["-batch", "-"]].concat(),
        &commands.join("\n"),
    )
}

pub(super) fn iptables_restore(ns: &str, rules: &str, noflush: bool) -> Result<(), String> {
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
pub(super) fn remove_namespaces(namespaces: &[String]) {
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
pub(super) fn clean_stale_once(prefix: &str) {
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

/// `iptables-save -c` in namespace `ns`: the rules with their packet and byte counts.
pub(super) fn iptables_save(ns: &str) -> Result<String, String> {
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "exec", ns, "iptables-save", "-c"]),
        TOOL_TIMEOUT,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
