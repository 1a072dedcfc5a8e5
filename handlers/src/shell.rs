//! Runs one shell handler invocation: `/bin/sh -c COMMAND` with the contract's environment and
//! stdin, bounded output capture, and a timeout that kills the whole process group.
//!
//! * The command runs in a process group of its own, so a timeout kills the shell and every
//!   process it started (a `sleep 100 &` included) with one `killpg(SIGKILL)`.
//! * stdin is written by its own future and then closed. A handler that never reads stdin is
//!   fine: the broken pipe is ignored.
//! * stdout and stderr are drained continuously into buffers that keep the last
//!   [`OUTPUT_LIMIT`] bytes each, so a handler that writes 100 MB costs 64 KiB per stream.
//! * When the shell exits while something it started in the background still holds stdout or
//!   stderr open, the pipes get [`PIPE_GRACE`] to reach end-of-file, then the run is over and the
//!   pipes are closed; the background process is not killed (a handler may start a daemon on
//!   purpose), but it gets `SIGPIPE` if it writes to them later.
//! * A command that cannot be found is not special: `sh` prints "not found" and exits 127, and
//!   the run is a failure like any other.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How many bytes of stdout, and of stderr, a run keeps (the last ones).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long the pipes may stay open after the shell exited (or was killed) before the run stops
/// reading them.
pub const PIPE_GRACE: Duration = Duration::from_millis(500);

/// The shell every command runs under, as Serf does on Unix.
const SHELL: &str = "/bin/sh";

/// One invocation to run.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Passed to `/bin/sh -c` as one argument.
    pub command: String,
    /// Added to the agent's inherited environment, later entries winning.
    pub env: Vec<(String, String)>,
    /// Written to stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// After this long the process group is killed.
    pub timeout: Duration,
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The exit code, when the shell exited normally.
    pub exit_code: Option<i32>,
    /// The signal that ended the shell (`9` after a timeout).
    pub signal: Option<i32>,
    /// The run hit its timeout and its process group was killed.
    pub timed_out: bool,
    /// From spawning to the end of the run.
    pub duration: Duration,
    pub started_at: SystemTime,
    /// The last [`OUTPUT_LIMIT`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// The last [`OUTPUT_LIMIT`] bytes of stderr.
    pub stderr: Vec<u8>,
    /// stdout or stderr was longer than [`OUTPUT_LIMIT`] and lost its beginning.
    pub truncated: bool,
    /// Why the shell could not be started at all (then nothing else is set).
    pub error: Option<String>,
}

impl RunResult {
    /// Exited with code 0 within the timeout.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.error.is_none()
    }

    /// When the run ended.
    pub fn finished_at(&self) -> SystemTime {
        self.started_at + self.duration
    }

    /// The last `max` bytes of stderr as text, trimmed, for a log line.
    pub fn stderr_tail(&self, max: usize) -> String {
        tail_text(&self.stderr, max)
    }

    /// The last `max` bytes of stdout as text, trimmed, for a log line.
    pub fn stdout_tail(&self, max: usize) -> String {
        tail_text(&self.stdout, max)
    }
}

impl fmt::Display for RunResult {
    /// How the run ended, in words: `exited with code 0`, `timed out after 1.001s; …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.error {
            return write!(f, "could not start {SHELL}: {error}");
        }
        if self.timed_out {
            return write!(
                f,
                "timed out after {:?}; its process group was killed",
                self.duration
            );
        }
        match (self.exit_code, self.signal) {
            (Some(127), _) => write!(f, "exited with code 127 (command not found)"),
            (Some(126), _) => write!(f, "exited with code 126 (command not executable)"),
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(signal)) => write!(f, "killed by signal {signal}"),
            (None, None) => write!(f, "ended with an unknown status"),
        }
    }
}

fn tail_text(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// Runs the invocation to its end. Never panics and never fails: a shell that cannot be
/// started is reported in [`RunResult::error`].
pub async fn run(invocation: Invocation) -> RunResult {
    let started_at = SystemTime::now();
    let start = Instant::now();
    let mut command = Command::new(SHELL);
    command
        .arg("-c")
        .arg(&invocation.command)
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match spawn(command).await {
        Ok(child) => child,
        Err(error) => {
            return RunResult {
                exit_code: None,
                signal: None,
                timed_out: false,
                duration: start.elapsed(),
                started_at,
                stdout: Vec::new(),
                stderr: Vec::new(),
                truncated: false,
                error: Some(error.to_string()),
            };
        }
    };
    // With process_group(0) the group id is the shell's pid. The guard kills the group if this
    // future is dropped mid-run (agent shutdown), and is disarmed once the shell is reaped.
    let mut group = child.id().map(|pid| ProcessGroup(pid as libc::pid_t));

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out = TailBuffer::new(OUTPUT_LIMIT);
    let mut err = TailBuffer::new(OUTPUT_LIMIT);
    let deadline = tokio::time::Instant::from_std(start + invocation.timeout);

    let (status, timed_out) = {
        let pipes = async {
            tokio::join!(
                write_stdin(stdin, invocation.stdin),
                drain(stdout, &mut out),
                drain(stderr, &mut err),
            )
        };
        tokio::pin!(pipes);
        // Registered once: a timer created anew in each turn of the loop below is registered
        // anew each time, and every registration wakes the runtime's own thread once more.
        let timeout = tokio::time::sleep_until(deadline);
        tokio::pin!(timeout);
        let mut pipes_done = false;
        let mut timed_out = false;
        let status = loop {
            tokio::select! {
                _ = &mut pipes, if !pipes_done => pipes_done = true,
                status = child.wait() => break status,
                _ = &mut timeout, if !timed_out => {
                    timed_out = true;
                    if let Some(group) = &group {
                        group.kill();
                    }
                }
            }
        };
        if let Some(group) = group.take() {
            group.disarm();
        }
        if !pipes_done {
            let _ = tokio::time::timeout(PIPE_GRACE, &mut pipes).await;
        }
        (status, timed_out)
    };

    let (stdout, stdout_cut) = out.finish();
    let (stderr, stderr_cut) = err.finish();
    let mut result = RunResult {
        exit_code: None,
        signal: None,
        timed_out,
        duration: start.elapsed(),
        started_at,
        stdout,
        stderr,
        truncated: stdout_cut || stderr_cut,
        error: None,
    };
    match status {
        Ok(status) => {
            result.exit_code = status.code();
            result.signal = status.signal();
        }
        Err(error) => result.error = Some(format!("waiting for the shell failed: {error}")),
    }
    result
}

/// Starts the shell. While the agent's threads run boosted ([`crate::priority`]), the shell (and
/// whatever it starts) must not inherit the boost: on the handler thread ([`crate::thread`]),
/// which runs at the agent's original nice value, it is started straight away; from anywhere
/// else, from a short-lived thread back at that value. (One long-lived spawner thread, woken
/// for each run from the agent's runtime, was
/// measured against this: on 50 agents it delayed the relays of a user event — delivery p50
/// 7.3 → 8.8–10 ms, max 15–20 → 33 ms — and did not start the handlers any sooner.)
async fn spawn(mut command: Command) -> std::io::Result<tokio::process::Child> {
    let Some(nice) = crate::priority::handler_nice() else {
        return command.spawn();
    };
    if crate::priority::current().ok() == Some(nice) {
        // Already at the handlers' priority: the handler thread (crate::thread).
        return command.spawn();
    }
    // tokio registers the child with the runtime that is current where it is spawned.
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rumor-spawn".into())
        .spawn(move || {
            let result = crate::priority::set_current(nice).and_then(|()| {
                let _runtime = runtime.enter();
                command.spawn()
            });
            let _ = tx.send(result);
        })?;
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread ended early")))
}

/// Writes the stdin bytes and closes stdin. A reader that went away (EPIPE) is not an error:
/// many handlers never read stdin.
async fn write_stdin(stdin: Option<tokio::process::ChildStdin>, bytes: Vec<u8>) {
    let Some(mut stdin) = stdin else { return };
    if let Err(error) = stdin.write_all(&bytes).await
        && error.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::debug!(%error, "writing a handler's stdin failed");
    }
    // Dropping `stdin` closes it.
}

/// Reads a pipe to its end into `tail`. The read buffer starts small, since most handlers
/// print a line or nothing, and grows to a pipe's capacity once a read fills it: two 64 KiB
/// buffers per run, zeroed and given back, cost each agent more CPU per event than the reads.
async fn drain<R: AsyncRead + Unpin>(pipe: Option<R>, tail: &mut TailBuffer) {
    const FIRST: usize = 4 * 1024;
    const MOST: usize = 64 * 1024;
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0u8; FIRST];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.push(&chunk[..n]);
                if n == chunk.len() && chunk.len() < MOST {
                    chunk.resize(MOST, 0);
                }
            }
        }
    }
}

/// A process group to kill on timeout, or when the run is abandoned.
struct ProcessGroup(libc::pid_t);

impl ProcessGroup {
    fn kill(&self) {
        // SAFETY: killpg has no memory-safety preconditions. The group exists: its leader has
        // not been reaped yet (the guard is disarmed right after reaping).
        unsafe {
            libc::killpg(self.0, libc::SIGKILL);
        }
    }

    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the last `limit` bytes written to it.
struct TailBuffer {
    buf: Vec<u8>,
    limit: usize,
    total: u64,
}

impl TailBuffer {
    fn new(limit: usize) -> TailBuffer {
        TailBuffer {
            buf: Vec::new(),
            limit,
            total: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if data.len() >= self.limit {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.limit..]);
            return;
        }
        self.buf.extend_from_slice(data);
        // Compact only when twice the limit is reached, so each byte is moved O(1) times.
        if self.buf.len() > 2 * self.limit {
            self.buf.drain(..self.buf.len() - self.limit);
        }
    }

    /// The kept bytes, and whether anything was cut off the front.
    fn finish(mut self) -> (Vec<u8>, bool) {
        if self.buf.len() > self.limit {
            self.buf.drain(..self.buf.len() - self.limit);
        }
        (self.buf, self.total > self.limit as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(command: &str) -> Invocation {
        Invocation {
            command: command.into(),
            env: vec![],
            stdin: vec![],
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn tail_buffer_keeps_the_last_bytes() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"ab");
        assert_eq!(tail.finish(), (b"ab".to_vec(), false));

        let mut tail = TailBuffer::new(4);
        for chunk in [&b"abc"[..], b"def", b"gh", b"i"] {
            tail.push(chunk);
        }
        assert_eq!(tail.finish(), (b"fghi".to_vec(), true));

        let mut tail = TailBuffer::new(4);
        tail.push(b"x");
        tail.push(b"0123456789");
        assert_eq!(tail.finish(), (b"6789".to_vec(), true));
    }

    #[tokio::test]
    async fn captures_exit_code_output_env_and_stdin() {
        let result = run(Invocation {
            command: "read line; echo \"got $line from $WHO\"; echo oops >&2; exit 3".into(),
            env: vec![("WHO".into(), "test".into())],
            stdin: b"hello\n".to_vec(),
            timeout: Duration::from_secs(10),
        })
        .await;
        assert_eq!(result.exit_code, Some(3));
        assert_eq!(result.signal, None);
        assert!(!result.timed_out);
        assert!(!result.success());
        assert_eq!(result.stdout, b"got hello from test\n");
        assert_eq!(result.stderr, b"oops\n");
        assert!(!result.truncated);
        assert_eq!(result.to_string(), "exited with code 3");
    }

    #[tokio::test]
    async fn missing_command_is_exit_127_with_not_found() {
        let result = run(invocation("/nonexistent/handler-xyz")).await;
        assert_eq!(result.exit_code, Some(127));
        assert!(result.stderr_tail(1024).contains("not found"), "{result:?}");
        assert_eq!(
            result.to_string(),
            "exited with code 127 (command not found)"
        );
    }

    #[tokio::test]
    async fn handler_that_ignores_a_large_stdin_is_fine() {
        let mut inv = invocation("exit 0");
        inv.stdin = vec![b'x'; 4 * 1024 * 1024];
        let result = run(inv).await;
        assert!(result.success(), "{result:?}");
    }

    #[tokio::test]
    async fn timeout_kills_the_group() {
        let mut inv = invocation("sleep 30 & sleep 30");
        inv.timeout = Duration::from_millis(300);
        let result = run(inv).await;
        assert!(result.timed_out);
        assert_eq!(result.signal, Some(libc::SIGKILL));
        assert!(result.duration < Duration::from_secs(5), "{result:?}");
        assert!(result.to_string().starts_with("timed out after"));
    }

    #[tokio::test]
    async fn background_child_holding_stdout_does_not_hold_the_run() {
        let result = run(invocation("sleep 3 & echo $!; echo done")).await;
        assert!(result.success(), "{result:?}");
        assert!(result.duration < Duration::from_secs(2), "{result:?}");
        let text = String::from_utf8_lossy(&result.stdout).to_string();
        assert!(text.ends_with("done\n"), "{text}");
        // Clean up the background sleep.
        let pid: i32 = text.lines().next().unwrap().parse().unwrap();
        // SAFETY: plain kill(2) of a pid this test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let result = run(invocation(
            "head -c 3000000 /dev/zero; printf end; head -c 100000 /dev/zero >&2",
        ))
        .await;
        assert!(result.success(), "{result:?}");
        assert_eq!(result.stdout.len(), OUTPUT_LIMIT);
        assert!(result.stdout.ends_with(b"end"));
        assert_eq!(result.stderr.len(), OUTPUT_LIMIT);
        assert!(result.truncated);
    }
}
