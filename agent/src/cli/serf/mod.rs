//! The binary invoked as `serf` (a symlink or a copy named `serf`): Serf's commands with
//! Serf's Go-style flags and Serf's output, so scripts and habits written for Serf keep
//! working against a rumor agent.
//!
//! Every command is a translation, not a second implementation: its flags become a `rumor`
//! command line (`serf members -tag role=web -format=json` runs `rumor members --tag role=web
//! --format json`), which runs as `rumor` would run it; where Serf prints another shape, the
//! rumor command's JSON is captured and reshaped (`shapes.rs`). `-rpc-addr` / `SERF_RPC_ADDR`
//! become `--control` (a socket path or `host:port`, whatever `--control` takes), `-rpc-auth` /
//! `SERF_RPC_AUTH` become `--control-token`; without them the agent is found where `rumor`
//! finds it. A flag rumor cannot honour fails with a message that says so.
//!
//! * `flags.rs`: Go's flag syntax.
//! * `commands.rs`: Serf's commands, their flags and usage texts.
//! * `translate.rs`: each command run as the rumor command it stands for.
//! * `shapes.rs`: Serf's JSON shapes and text layouts.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use super::output::Output;
use super::{Cli, ControlArgs};

mod commands;
mod flags;
mod shapes;
mod translate;

pub use flags::{Flag, FlagError, Kind};

/// Whether the program was started under the name `serf`.
pub fn invoked_as_serf(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|name| name == "serf")
}

/// Runs `serf ARGS...` (the arguments after the program name) and returns the exit code Serf
/// would: 0 on success, 1 on failure (usage errors included), 127 for no or an unknown
/// command.
pub fn main(args: Vec<String>) -> ExitCode {
    let Some((command, rest)) = args.split_first() else {
        eprint!("{}", commands::top_usage());
        return ExitCode::from(127);
    };
    let mut out = Output::stdout();
    let result = match command.as_str() {
        "-h" | "-help" | "--help" | "help" => {
            print!("{}", commands::top_usage());
            return ExitCode::SUCCESS;
        }
        "-v" | "-version" | "--version" => translate::run("version", &[], &mut out),
        _ if !commands::known(command) => {
            eprint!("{}", commands::top_usage());
            return ExitCode::from(127);
        }
        _ => translate::run(command, rest, &mut out),
    };
    let flushed = out.flush();
    match result.map_err(Failure::from).and_then(|()| Ok(flushed?)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage { message, usage }) => {
            let mut stderr = std::io::stderr();
            if let Some(message) = message {
                let _ = writeln!(stderr, "{message}\n");
            }
            let _ = write!(stderr, "{usage}");
            ExitCode::FAILURE
        }
        Err(Failure::Help { usage }) => {
            print!("{usage}");
            ExitCode::SUCCESS
        }
        Err(Failure::Other(e)) if super::output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(Failure::Other(e)) => {
            // Each message says what failed first, as Serf's do ("Error joining the cluster: …").
            let _ = writeln!(std::io::stderr(), "{}", super::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// How a command ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// A command line Serf would refuse: the message (if any), then the command's usage.
    Usage {
        message: Option<String>,
        usage: String,
    },
    /// `-h`: the command's usage, on stdout.
    Help {
        usage: String,
    },
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        match e.downcast::<Failure>() {
            Ok(failure) => failure,
            Err(e) => Failure::Other(e),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Other(e.into())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage {
                message: Some(m), ..
            } => f.write_str(m),
            Failure::Usage { message: None, .. } | Failure::Help { .. } => {
                f.write_str("usage requested")
            }
            Failure::Other(e) => f.write_str(&super::error_line(e)),
        }
    }
}

impl std::error::Error for Failure {}

/// Runs `rumor ARGV...` as the `rumor` binary would, printing to `out`. A command line clap
/// refuses is reported by its first line (what was wrong), without rumor's usage text.
fn rumor(argv: &[String], out: &mut Output) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("rumor".to_string()).chain(argv.iter().cloned()))
        .map_err(clap_message)?;
    super::run(cli.command, out)
}

/// Runs `rumor ARGV...` and returns what it printed, with how it ended (a command can print
/// its answer and still fail, as `rumor keys` does when a node failed).
fn rumor_captured(argv: &[String]) -> (Vec<u8>, anyhow::Result<()>) {
    let captured = Captured::default();
    let mut out = Output::to(captured.clone());
    let result = rumor(argv, &mut out).and_then(|()| Ok(out.flush()?));
    let bytes = std::mem::take(&mut *captured.0.lock().unwrap_or_else(|p| p.into_inner()));
    (bytes, result)
}

/// The client for the agent the control flags point at (with `RUMOR_CONTROL` and the default
/// socket as fallbacks, as for every `rumor` command).
fn control_client(control: &[String]) -> anyhow::Result<crate::control::Client> {
    #[derive(Parser)]
    struct ControlOnly {
        #[command(flatten)]
        control: ControlArgs,
    }
    let parsed = ControlOnly::try_parse_from(
        std::iter::once("serf".to_string()).chain(control.iter().cloned()),
    )
    .map_err(clap_message)?;
    Ok(parsed.control.client())
}

/// clap's message without its usage lines and `error: ` prefix.
fn clap_message(e: clap::Error) -> anyhow::Error {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    anyhow::anyhow!(first.strip_prefix("error: ").unwrap_or(first).to_string())
}

/// A writer whose bytes the caller takes afterwards.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
