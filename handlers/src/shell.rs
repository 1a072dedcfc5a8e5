//! The shell runtime: one handler run is `/bin/sh -c COMMAND` with the contract's environment
//! and stdin, bounded output capture, and a timeout that kills the whole process group.
//!
//! * The command runs in a process group of its own, so a timeout kills the shell and every
//!   process it started (a `sleep 100 &` included) with one `killpg(SIGKILL)`.
//! * stdin is written by its own future and then closed. A handler that never reads stdin is
//!   fine: the broken pipe is ignored.
//! * stdout and stderr are drained continuously into buffers that keep the last
//!   [`OUTPUT_LIMIT`] bytes each ([`TailBuffer`]), so a handler that writes 100 MB costs 64 KiB
//!   per stream.
//! * When the shell exits while something it started in the background still holds stdout or
//!   stderr open, the pipes get [`PIPE_GRACE`] to reach end-of-file, then the run is over and the
//!   pipes are closed; the background process is not killed (a handler may start a daemon on
//!   purpose), but it gets `SIGPIPE` if it writes to them later.
//! * A command that cannot be found is not special: `sh` prints "not found" and exits 127, and
//!   the run is a failure like any other.
//! * The shell is started from the thread the run is on, and inherits its priority: the agent
//!   runs its handlers on a [`HandlerThread`](crate::HandlerThread) it put at the handlers'
//!   priority, so a shell starts without a thread of its own.
//!
//! [`Shell`] is this as a [`Runtime`]; [`run`] is one invocation on its own.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::contract;
use crate::output::{OUTPUT_LIMIT, TailBuffer};
use crate::runtime::{Run, RunFuture, RunResult, Runtime};

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
    /// Added to the agent's inherited environment (less its secrets,
    /// [`contract::WITHHELD_VARIABLES`]), later entries winning.
    pub env: Vec<(String, String)>,
    /// Written to stdin, which is then closed.
    pub stdin: Vec<u8>,
    /// After this long the process group is killed.
    pub timeout: Duration,
}

/// A shell handler: runs its command for each event, under Serf's contract
/// ([`crate::contract`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    /// Passed to `/bin/sh -c` as one argument.
    pub command: String,
}

impl Shell {
    /// What one run of `run.event` is: the command with the contract's environment (then the
    /// handler's own `env`, which wins) and stdin.
    pub fn invocation(&self, run: &Run<'_>) -> Invocation {
        let mut env = contract::environment(run.event, run.local);
        env.extend(run.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Invocation {
            command: self.command.clone(),
            env,
            stdin: contract::stdin(run.event),
            timeout: run.timeout,
        }
    }
}

impl Runtime for Shell {
    fn run<'r>(&'r self, run: &Run<'_>) -> RunFuture<'r> {
        Box::pin(self::run(self.invocation(run)))
    }
}

/// `/bin/sh -c COMMAND` with the agent's environment minus
/// [`contract::WITHHELD_VARIABLES`], then the invocation's (which may set those again on
/// purpose: a handler's own `env`).
fn command(invocation: &Invocation) -> Command {
    let mut command = Command::new(SHELL);
    command.arg("-c").arg(&invocation.command);
    for name in contract::WITHHELD_VARIABLES {
        command.env_remove(name);
    }
    command.envs(invocation.env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs the invocation to its end. Never panics and never fails: a shell that cannot be
/// started is reported in [`RunResult::error`], with [`RunResult::started`] false.
pub async fn run(invocation: Invocation) -> RunResult {
    let started_at = SystemTime::now();
    let start = Instant::now();
    let mut command = command(&invocation);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return RunResult::not_started(
                started_at,
                start.elapsed(),
                format!("could not start {SHELL}: {error}"),
            );
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
        started: true,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::LocalNode;
    use crate::event::{Event, UserEvent};

    fn invocation(command: &str) -> Invocation {
        Invocation {
            command: command.into(),
            env: vec![],
            stdin: vec![],
            timeout: Duration::from_secs(10),
        }
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

    #[test]
    fn the_agents_secrets_are_withheld_unless_the_handler_sets_them() {
        let mut with_env = invocation("true");
        with_env.env = vec![("RUMOR_ENCRYPT".into(), "given on purpose".into())];
        let command = command(&with_env);
        let envs: Vec<_> = command.as_std().get_envs().collect();
        for name in ["RUMOR_CONTROL_TOKEN", "RUMOR_CONTROL_TOKEN_FILE"] {
            assert!(
                envs.contains(&(std::ffi::OsStr::new(name), None)),
                "{name} is not removed: {envs:?}"
            );
        }
        assert!(envs.contains(&(
            std::ffi::OsStr::new("RUMOR_ENCRYPT"),
            Some(std::ffi::OsStr::new("given on purpose"))
        )));
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

    #[tokio::test]
    async fn as_a_runtime_it_runs_the_command_under_the_contract_with_the_handlers_env() {
        let shell = Shell {
            command: r#"printf '%s %s %s|' "$SERF_EVENT" "$SERF_SELF_NAME" "$STAGE"; cat"#.into(),
        };
        let event = Event::User(UserEvent {
            ltime: 3,
            name: "deploy".into(),
            payload: b"v42".to_vec(),
            coalesce: false,
            origin: "ops".into(),
        });
        let local = LocalNode {
            name: "web-1".into(),
            tags: Default::default(),
        };
        // The handler's own env comes last and wins, even over the contract's.
        let env = [
            ("STAGE".to_string(), "prod".to_string()),
            ("SERF_SELF_NAME".to_string(), "renamed".to_string()),
        ]
        .into();
        let run = Run {
            handler: "h",
            event: &event,
            local: &local,
            env: &env,
            timeout: Duration::from_secs(10),
        };
        let result = Runtime::run(&shell, &run).await;
        assert!(result.success(), "{result:?}");
        assert_eq!(result.stdout, b"user renamed prod|v42\n");
    }
}
