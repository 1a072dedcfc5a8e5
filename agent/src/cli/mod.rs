//! The command line: one file per command, each a small function from its arguments to a
//! control API call and printed output. This file holds the top level, the flags every client
//! command shares, and error reporting.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::control::{Client, ControlEndpoint, TokenSource, default_control_endpoint};

mod agent;
mod checks;
mod completions;
mod config;
mod deploy;
mod event;
mod events;
mod force_leave;
mod info;
mod inventory;
mod join;
mod keygen;
mod keys;
mod leave;
mod man;
mod members;
mod monitor;
mod output;
mod plugin;
mod query;
mod reachability;
mod reload;
pub mod serf;
mod tags;
mod template;
mod version;

use output::Output;

/// rumor: a decentralized orchestration agent. Every host runs `rumor agent`; the agents find
/// each other by gossip, agree on who is alive, spread user events and run handlers.
///
/// Every other command talks to the local agent through its control API (a Unix socket,
/// by default `<data dir>/control.sock`; see --control). Installed under the name `serf`, the
/// binary takes Serf's commands and flags instead (docs/serf.md).
#[derive(Debug, Parser)]
#[command(name = "rumor", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: join the cluster, run handlers, serve the control API.
    ///
    /// Runs in the foreground until it is stopped (Ctrl-C, SIGTERM or `rumor leave`).
    /// SIGHUP reloads the configuration, like `rumor reload`.
    Agent(Box<crate::config::AgentArgs>),
    Members(members::Args),
    Join(join::Args),
    Leave(leave::Args),
    ForceLeave(force_leave::Args),
    Event(event::Args),
    Query(query::Args),
    Deploy(deploy::Args),
    Reachability(reachability::Args),
    Tags(tags::Args),
    Checks(checks::Args),
    Keys(keys::Args),
    Keygen(keygen::Args),
    Info(info::Args),
    Events(events::Args),
    Reload(reload::Args),
    Monitor(monitor::Args),
    Plugin(plugin::Args),
    Template(template::Args),
    Inventory(inventory::Args),
    Version(version::Args),
    Config(config::Args),
    Completions(completions::Args),
    Man(man::Args),
}

/// Where client commands find the agent, and the token a TCP endpoint requires.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// The agent's control API: a Unix socket path (anything containing '/', or unix:PATH) or
    /// HOST:PORT (TCP, which needs --control-token). Default: control.sock in the data
    /// directory, which is $RUMOR_DATA_DIR, else /var/lib/rumor for root, else
    /// $XDG_STATE_HOME/rumor or ~/.local/state/rumor.
    #[arg(
        long,
        env = "RUMOR_CONTROL",
        value_name = "PATH|HOST:PORT",
        value_parser = parse_endpoint,
        global = true
    )]
    pub control: Option<ControlEndpoint>,

    /// The agent's control token, sent to a TCP endpoint (ignored for a Unix socket).
    #[arg(
        long,
        env = "RUMOR_CONTROL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub control_token: Option<String>,

    /// Read the control token from this file (it must not be readable by group or others).
    #[arg(
        long,
        env = "RUMOR_CONTROL_TOKEN_FILE",
        value_name = "PATH",
        conflicts_with = "control_token",
        global = true
    )]
    pub control_token_file: Option<PathBuf>,
}

impl ControlArgs {
    pub fn client(&self) -> Client {
        let token = TokenSource::from_value_or_file(
            self.control_token.clone(),
            self.control_token_file.clone(),
        );
        Client::new(
            self.control
                .clone()
                .unwrap_or_else(default_control_endpoint),
        )
        .with_token(token)
    }
}

fn parse_endpoint(s: &str) -> Result<ControlEndpoint, String> {
    s.parse()
        .map_err(|e: crate::control::endpoint::EndpointError| e.to_string())
}

/// How commands print data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    #[default]
    Text,
    /// JSON, exactly as the control API returns it.
    Json,
}

/// The `--format` flag of commands that print data.
#[derive(Debug, Clone, clap::Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Splits `KEY=VALUE` for flags like `--set` and `--tag`; `what` names the value part.
pub fn split_key_value(s: &str, what: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err(format!("{s:?} has an empty key: expected KEY={what}")),
        None => Err(format!("{s:?} has no '=': expected KEY={what}")),
    }
}

/// Parses a `--timeout`-style duration: `500ms`, `10s`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 500ms or 10s: {e}"))
}

/// Runs the command line and returns the process exit code: 0 on success (and when stdout's
/// reader went away), 1 on failure with one `error: ...` line on stderr, 2 for usage errors.
pub fn main() -> ExitCode {
    // Installed as `serf`: Serf's commands and flags (see `serf/`).
    let mut argv = std::env::args_os();
    if serf::invoked_as_serf(argv.next().as_deref()) {
        return serf::main(argv.map(|a| a.to_string_lossy().into_owned()).collect());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let mut out = Output::stdout();
    let result = run(cli.command, &mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `context: cause: cause`, leaving out a cause whose
/// text the line already holds: many of our messages name their cause themselves ("cannot
/// listen on ...: Address already in use ..."), and anyhow's `{:#}` would repeat it.
pub(crate) fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(command: Command, out: &mut Output) -> anyhow::Result<()> {
    match command {
        Command::Agent(args) => agent::run(*args),
        Command::Version(args) => version::run(args, out),
        Command::Keygen(args) => keygen::run(args, out),
        Command::Config(args) => config::run(args, out),
        Command::Completions(args) => completions::run(args, out),
        Command::Man(args) => man::run(args, out),
        client_command => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                match client_command {
                    Command::Members(args) => members::run(args, out).await,
                    Command::Join(args) => join::run(args, out).await,
                    Command::Leave(args) => leave::run(args, out).await,
                    Command::ForceLeave(args) => force_leave::run(args, out).await,
                    Command::Event(args) => event::run(args, out).await,
                    Command::Query(args) => query::run(args, out).await,
                    Command::Deploy(args) => deploy::run(args, out).await,
                    Command::Reachability(args) => reachability::run(args, out).await,
                    Command::Tags(args) => tags::run(args, out).await,
                    Command::Checks(args) => checks::run(args, out).await,
                    Command::Keys(args) => keys::run(args, out).await,
                    Command::Info(args) => info::run(args, out).await,
                    Command::Events(args) => events::run(args, out).await,
                    Command::Reload(args) => reload::run(args, out).await,
                    Command::Monitor(args) => monitor::run(args, out).await,
                    Command::Plugin(args) => plugin::run(args, out).await,
                    Command::Template(args) => template::run(args, out).await,
                    Command::Inventory(args) => inventory::run(args, out).await,
                    Command::Agent(_)
                    | Command::Version(_)
                    | Command::Keygen(_)
                    | Command::Config(_)
                    | Command::Completions(_)
                    | Command::Man(_) => {
                        unreachable!("handled above")
                    }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Captures what a command prints.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `rumor ARGS --control SOCKET` as `main` would, returning its output.
    fn rumor(socket: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
        let mut argv = vec!["rumor"];
        argv.extend_from_slice(args);
        argv.extend(["--control", socket.to_str().unwrap()]);
        let cli = Cli::try_parse_from(argv)?;
        let captured = Captured::default();
        run(cli.command, &mut Output::to(captured.clone()))?;
        let bytes = captured.0.lock().unwrap().clone();
        Ok(String::from_utf8(bytes)?)
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let e = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:1 (udp): address in use. Choose another");
        assert_eq!(
            error_line(&e),
            "cannot listen on 127.0.0.1:1 (udp): address in use. Choose another"
        );
        let e = anyhow::anyhow!("invalid handler coalesce \"2x\": expected a duration")
            .context("rumor.toml:1:1: invalid handler coalesce \"2x\": expected a duration");
        assert_eq!(
            error_line(&e),
            "rumor.toml:1:1: invalid handler coalesce \"2x\": expected a duration"
        );
        let e = anyhow::anyhow!("connection refused").context("cannot reach the agent");
        assert_eq!(error_line(&e), "cannot reach the agent: connection refused");
    }

    #[test]
    fn commands_print_what_the_agent_answers() {
        // The server runs on its own runtime; each command builds its own, as in `main`.
        let server_runtime = tokio::runtime::Runtime::new().unwrap();
        let fixture = server_runtime.block_on(crate::control::tests::start());
        let socket = fixture.socket.clone();

        let members = rumor(&socket, &["members"]).unwrap();
        assert_eq!(
            members,
            "a  127.0.0.1:7946  alive   role=web\nb  127.0.0.1:7946  failed  role=db\n"
        );
        let json = rumor(
            &socket,
            &["members", "--tag", "role=d.", "--format", "json"],
        )
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["members"].as_array().unwrap().len(), 1);
        assert_eq!(parsed["members"][0]["name"], "b");

        let sent = rumor(&socket, &["event", "--coalesce=false", "deploy", "v1"]).unwrap();
        assert_eq!(
            sent,
            "Event \"deploy\" dispatched (ltime 7, coalesce false)\n"
        );
        let err = rumor(
            &socket,
            &["event", "deploy", "a payload that is far too long"],
        )
        .unwrap_err();
        assert!(format!("{err:#}").starts_with("event too large"), "{err:#}");
        let tags = rumor(&socket, &["tags", "--set", "role=web", "--set", "dc=eu"]).unwrap();
        assert_eq!(tags, "dc=eu\nrole=web\n");

        server_runtime.block_on(fixture.server.shutdown());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_value_errors_say_what_is_wrong() {
        assert_eq!(
            split_key_value("role=web=1", "VALUE").unwrap(),
            ("role".into(), "web=1".into())
        );
        assert_eq!(
            split_key_value("role=", "VALUE").unwrap(),
            ("role".into(), "".into())
        );
        assert!(
            split_key_value("role", "VALUE")
                .unwrap_err()
                .contains("no '='")
        );
        assert!(
            split_key_value("=web", "VALUE")
                .unwrap_err()
                .contains("empty key")
        );
    }

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        control: ControlArgs,
    }

    #[test]
    fn control_flag_accepts_paths_and_tcp_addresses() {
        let probe = Probe::try_parse_from(["probe", "--control", "/tmp/x.sock"]).unwrap();
        let expected = ControlEndpoint::Unix("/tmp/x.sock".into());
        assert_eq!(probe.control.control, Some(expected));
        let probe = Probe::try_parse_from(["probe", "--control", "10.1.1.1:7373"]).unwrap();
        let expected = ControlEndpoint::Tcp("10.1.1.1:7373".parse().unwrap());
        assert_eq!(probe.control.control, Some(expected));
        let err = Probe::try_parse_from(["probe", "--control", "nowhere"]).unwrap_err();
        assert!(
            err.to_string().contains("invalid control endpoint"),
            "{err}"
        );
        assert!(Cli::try_parse_from(["rumor", "info", "--control", "/tmp/x.sock"]).is_ok());
    }

    #[test]
    fn the_token_comes_from_a_flag_or_a_file_but_not_both() {
        let probe = Probe::try_parse_from(["probe", "--control-token", "abc"]).unwrap();
        assert_eq!(probe.control.control_token.as_deref(), Some("abc"));
        let probe = Probe::try_parse_from(["probe", "--control-token-file", "/etc/t"]).unwrap();
        assert_eq!(
            probe.control.control_token_file,
            Some(PathBuf::from("/etc/t"))
        );
        let both = [
            "probe",
            "--control-token",
            "a",
            "--control-token-file",
            "/t",
        ];
        assert!(Probe::try_parse_from(both).is_err());
    }
}
