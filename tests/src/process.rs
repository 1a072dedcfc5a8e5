//! Running a short-lived command with a time bound, capturing its output.

use std::io::Read;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured. If it has not exited
/// after `timeout`, it is killed and an error describes the command and what it printed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    run_bounded(cmd, None, timeout)
}

/// [`run_with_timeout`] with `input` written to its stdin, which is then closed, as a script
/// pipes data into a command.
pub fn run_with_stdin(
    cmd: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> Result<Output, String> {
    run_bounded(cmd, Some(input.to_vec()), timeout)
}

fn run_bounded(
    cmd: &mut Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, String> {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // On a thread: a child that does not read must not block the timeout. Dropping the
        // pipe closes its stdin.
        thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        });
    }
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out = thread::spawn(move || read_all(out_pipe.as_mut()));
    let err = thread::spawn(move || read_all(err_pipe.as_mut()));
    let status = wait_timeout(&mut child, timeout);
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out.join().unwrap_or_default();
            let stderr = err.join().unwrap_or_default();
            return Err(format!(
                "{cmd:?} did not finish within {timeout:?}; stdout: {:?}; stderr: {:?}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            ));
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if start.elapsed() < timeout => thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => return None,
        }
    }
}

fn read_all(pipe: Option<&mut impl Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(p) = pipe {
        let _ = p.read_to_end(&mut buf);
    }
    buf
}

/// The process side of an [`crate::Agent`]: the running child (replaced on restart), how the
/// last one ended, and the log file every process of the agent appends to.
pub struct AgentProcess {
    name: String,
    log_path: std::path::PathBuf,
    child: Option<std::process::Child>,
    exit: Option<ExitStatus>,
}

impl AgentProcess {
    pub fn new(name: &str, log_path: std::path::PathBuf) -> AgentProcess {
        AgentProcess {
            name: name.to_owned(),
            log_path,
            child: None,
            exit: None,
        }
    }

    /// A freshly spawned process now stands for the agent.
    pub fn started(&mut self, child: std::process::Child) {
        self.child = Some(child);
        self.exit = None;
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// How the last process ended, if it did.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// Kills the process with SIGKILL (no graceful leave) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.exit = child.wait().ok();
            self.note("killed with SIGKILL");
        }
    }

    /// Sends SIGTERM (a graceful leave) to the running process, if any; does not wait.
    pub fn terminate(&mut self) {
        let Some(pid) = self.pid() else { return };
        self.note("sending SIGTERM");
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) only sends a signal; `pid` is our own unreaped child, so it cannot
        // name another process.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            sent,
            0,
            "kill -TERM {pid} ({}): {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            let status = wait_timeout(child, timeout)?;
            self.child = None;
            self.exit = Some(status);
            self.note(&format!("exited: {status}"));
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(std::process::Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                self.exit = Some(status);
                self.child = None;
                false
            }
            Some(Err(_)) | None => false,
        }
    }

    /// Everything the agent's processes wrote, with the harness's notes between them.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        crate::tail(&self.log(), lines)
    }

    /// What an agent's `Drop` does: during a panic, keeps its directory (`tmp`: logs,
    /// snapshots) and prints the log's tail under a header naming the agent (`place`: where
    /// it ran); always kills the process.
    pub fn stop_on_drop(&mut self, place: &str, tmp: &mut Option<tempfile::TempDir>) {
        if std::thread::panicking() {
            let kept = tmp.take().map(tempfile::TempDir::keep);
            eprintln!(
                "----- agent {} ({place}) log {}{} -----\n{}\n----- end of {} -----",
                self.name,
                self.log_path.display(),
                if kept.is_some() { " (kept)" } else { "" },
                self.log_tail(crate::LOG_TAIL_LINES),
                self.name
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Appends a line to the agent's log so that a reader sees what the harness did when.
    pub fn note(&self, what: &str) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "=== harness: {} {what} ===", self.name);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn kills_a_command_that_hangs() {
        let start = Instant::now();
        let err = run_with_timeout(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(
            err.contains("did not finish") && err.contains("started"),
            "{err}"
        );
    }

    #[test]
    fn rss_of_this_process() {
        let rss = rss_bytes(std::process::id()).expect("VmRSS readable");
        assert!(rss > 0);
    }
}
