//! Each of Serf's commands run as the `rumor` command it stands for: its flags become a rumor
//! command line, and what rumor answers is printed in Serf's form (`shapes.rs`).

use anyhow::{Context, bail};
use regex::Regex;

use super::commands::{self, Command};
use super::flags::Parsed;
use super::{Failure, control_client, rumor, rumor_captured, shapes};
use crate::cli::output::Output;
use crate::config::serf::parse_go_duration;
use crate::control::api::{InfoResponse, KeysResponse, MembersResponse};

/// Runs Serf's command `name` with `args`.
pub fn run(name: &str, args: &[String], out: &mut Output) -> anyhow::Result<()> {
    let command = commands::find(name).expect("known() was checked");
    let p = command.parse(args)?;
    match name {
        "members" => members(command, &p, out),
        "event" => event(command, &p, out),
        "query" => query(command, &p, out),
        "join" => join(command, &p, out),
        "leave" => {
            captured(&with_control(&p, ["leave"])).context("Error leaving")?;
            out.line("Graceful leave complete")?;
            Ok(())
        }
        "force-leave" => force_leave(command, &p),
        "tags" => tags(command, &p, out),
        "keys" => keys(command, &p, out),
        "info" => info(command, &p, out),
        "monitor" => {
            let level = match p
                .text("log-level")
                .unwrap_or("INFO")
                .to_ascii_uppercase()
                .as_str()
            {
                "TRACE" => "trace",
                "DEBUG" => "debug",
                "INFO" => "info",
                "WARN" => "warn",
                "ERR" | "ERROR" => "error",
                other => bail!(
                    "Invalid log level: {other}. Valid log levels are: TRACE, DEBUG, INFO, WARN, ERR"
                ),
            };
            rumor(&with_control(&p, ["monitor", "--log-level", level]), out)
        }
        "reachability" => rumor(&with_control(&p, ["reachability"]), out),
        "keygen" => rumor(&["keygen".to_string()], out),
        "version" => rumor(&["version".to_string()], out),
        "agent" => bail!(
            "`serf agent` is not supported: run `rumor agent --config rumor.toml`, after `rumor config import-serf /etc/serf > rumor.toml` turns Serf's configuration into rumor's"
        ),
        "rtt" => bail!(
            "rumor keeps no network coordinates, so `serf rtt` has no equivalent; `serf reachability` checks that every member answers"
        ),
        _ => unreachable!("every command is matched"),
    }
}

/// `rumor ARGS... [--control X] [--control-token T]` from `-rpc-addr`/`SERF_RPC_ADDR` and
/// `-rpc-auth`/`SERF_RPC_AUTH`.
fn with_control<const N: usize>(p: &Parsed, args: [&str; N]) -> Vec<String> {
    let mut argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    argv.extend(control_flags(p));
    argv
}

fn control_flags(p: &Parsed) -> Vec<String> {
    let from = |flag: &str, var: &str| {
        p.text(flag)
            .map(String::from)
            .or_else(|| std::env::var(var).ok())
            .filter(|v| !v.is_empty())
    };
    let mut argv = Vec::new();
    if let Some(addr) = from("rpc-addr", "SERF_RPC_ADDR") {
        argv.extend(["--control".to_string(), addr]);
    }
    if let Some(auth) = from("rpc-auth", "SERF_RPC_AUTH") {
        argv.extend(["--control-token".to_string(), auth]);
    }
    argv
}

/// Runs a rumor command whose output Serf does not print, failing as it fails.
fn captured(argv: &[String]) -> anyhow::Result<Vec<u8>> {
    let (bytes, result) = rumor_captured(argv);
    result.map(|()| bytes)
}

/// The `-format` value: `text` or `json`, as Serf accepts.
fn format(command: &Command, p: &Parsed) -> anyhow::Result<bool> {
    match p.text("format").unwrap_or("text") {
        "text" => Ok(false),
        "json" => Ok(true),
        other => Err(command.refuse(format!("Invalid format: {other}"))),
    }
}

fn members(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    let json = format(command, p)?;
    let mut argv = with_control(p, ["members", "--format", "json"]);
    let mut tags: Vec<String> = p.list("tag").to_vec();
    if let Some(role) = p.text("role") {
        out.line("Deprecation warning: 'Role' has been replaced with 'Tags'")?;
        tags.push(format!("role={role}"));
    }
    for tag in tags {
        argv.extend(["--tag".to_string(), tag]);
    }
    if let Some(name) = p.text("name").filter(|n| !n.is_empty()) {
        argv.extend(["--name".to_string(), name.to_string()]);
    }
    // Serf takes a regexp; rumor's API an exact status, so a regexp is applied here.
    let status = p.text("status").filter(|s| !s.is_empty());
    let status_regex = match status {
        Some(s @ ("alive" | "leaving" | "left" | "failed")) => {
            argv.extend(["--status".to_string(), s.to_string()]);
            None
        }
        Some(other) => Some(
            Regex::new(&format!("^(?:{other})$"))
                .map_err(|e| command.refuse(format!("Error: invalid -status regexp: {e}")))?,
        ),
        None => None,
    };
    let bytes = captured(&argv).context("Error retrieving members")?;
    let mut response: MembersResponse =
        serde_json::from_slice(&bytes).context("the agent's member list")?;
    if let Some(re) = status_regex {
        response.members.retain(|m| re.is_match(m.status.as_str()));
    }
    if json {
        out.json(&shapes::members(&response.members))?;
    } else {
        out.line(shapes::members_text(
            &response.members,
            p.bool("detailed", false),
        ))?;
    }
    Ok(())
}

/// `name [payload]`, with Serf's messages for too few or too many.
fn name_and_payload<'a>(
    command: &Command,
    p: &'a Parsed,
    what: &str,
) -> anyhow::Result<(&'a str, &'a str)> {
    match p.args.as_slice() {
        [] => Err(command.refuse(format!("{what} name must be specified."))),
        [name] => Ok((name, "")),
        [name, payload] => Ok((name, payload)),
        _ => Err(command
            .refuse("Too many command line arguments. Only a name and payload must be specified.")),
    }
}

fn event(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    let (name, payload) = name_and_payload(command, p, "An event")?;
    let coalesce = p.bool("coalesce", true);
    // The client, not `rumor event`: its payload `-` means stdin, Serf's is the text "-".
    let client = control_client(&control_flags(p)).context("Error connecting to the agent")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(client.event(name.to_string(), payload.as_bytes().to_vec(), coalesce))
        .context("Error sending event")?;
    out.line(format!(
        "Event '{name}' dispatched! Coalescing enabled: {coalesce}"
    ))?;
    Ok(())
}

fn query(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    let json = format(command, p)?;
    let (name, payload) = name_and_payload(command, p, "A query")?;
    match p.text("relay-factor").map(str::parse::<u8>) {
        None | Some(Ok(0)) => {}
        Some(Ok(_)) => {
            return Err(command.refuse(
                "-relay-factor is not supported: rumor nodes send their answers straight to the asker, with no relays",
            ));
        }
        Some(Err(_)) => return Err(command.refuse("Relay factor must be between 0 and 255")),
    }
    let mut argv = vec!["query".to_string(), name.to_string(), payload.to_string()];
    for node in p.list("node") {
        argv.extend(["--node".to_string(), node.clone()]);
    }
    for tag in p.list("tag") {
        argv.extend(["--tag".to_string(), tag.clone()]);
    }
    if let Some(timeout) = p.text("timeout") {
        let timeout = parse_go_duration(timeout)
            .map_err(|e| command.refuse(format!("invalid value for -timeout: {e}")))?;
        if !timeout.is_zero() {
            argv.extend([
                "--timeout".to_string(),
                format!("{}ms", timeout.as_millis().max(1)),
            ]);
        }
    }
    let no_ack = p.bool("no-ack", false);
    if no_ack {
        argv.push("--no-ack".to_string());
    }
    argv.extend(["--format".to_string(), "json".to_string()]);
    argv.extend(control_flags(p));
    let bytes = captured(&argv).context("Error sending query")?;
    let rumor: serde_json::Value =
        serde_json::from_slice(&bytes).context("the agent's query result")?;
    let result = shapes::query(&rumor);
    if json {
        out.json(&result)?;
    } else {
        for line in shapes::query_text(name, &result, no_ack) {
            out.line(line)?;
        }
    }
    Ok(())
}

fn join(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    if p.bool("replay", false) {
        return Err(command.refuse(
            "-replay is not supported: rumor never replays past user events to a joining node",
        ));
    }
    if p.args.is_empty() {
        return Err(command.refuse("At least one address to join must be specified."));
    }
    let mut argv = vec!["join".to_string()];
    argv.extend(p.args.iter().cloned());
    argv.extend(["--format".to_string(), "json".to_string()]);
    argv.extend(control_flags(p));
    let bytes = captured(&argv).context("Error joining the cluster")?;
    let report: crate::control::api::JoinReport =
        serde_json::from_slice(&bytes).context("the agent's join report")?;
    if report.joined == 0 {
        bail!("Error joining the cluster: {}", report.errors.join("; "));
    }
    out.line(format!(
        "Successfully joined cluster by contacting {} nodes.",
        report.joined
    ))?;
    Ok(())
}

fn force_leave(command: &Command, p: &Parsed) -> anyhow::Result<()> {
    let [node] = p.args.as_slice() else {
        return Err(command.refuse("A node name must be specified to force leave."));
    };
    let mut argv = vec!["force-leave".to_string(), node.clone()];
    if p.bool("prune", false) {
        argv.push("--prune".to_string());
    }
    argv.extend(control_flags(p));
    captured(&argv).context("Error force leaving")?;
    Ok(())
}

fn tags(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    if p.list("set").is_empty() && p.list("delete").is_empty() {
        return Err(Failure::Usage {
            message: None,
            usage: command.usage(),
        }
        .into());
    }
    let mut argv = vec!["tags".to_string(), "--format".into(), "json".into()];
    for tag in p.list("set") {
        argv.extend(["--set".to_string(), tag.clone()]);
    }
    for key in p.list("delete") {
        argv.extend(["--delete".to_string(), key.clone()]);
    }
    argv.extend(control_flags(p));
    captured(&argv).context("Error setting tags")?;
    out.line("Successfully updated agent tags")?;
    Ok(())
}

fn keys(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    let chosen: Vec<(&str, Option<&str>)> = [
        ("list", p.bool("list", false).then_some("")),
        ("install", p.text("install").filter(|k| !k.is_empty())),
        ("use", p.text("use").filter(|k| !k.is_empty())),
        ("remove", p.text("remove").filter(|k| !k.is_empty())),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_some())
    .collect();
    let (op, key) = match chosen.as_slice() {
        [] => {
            return Err(Failure::Usage {
                message: None,
                usage: command.usage(),
            }
            .into());
        }
        [(op, key)] => (*op, key.unwrap_or_default()),
        _ => {
            return Err(command.refuse("Only one of -install, -use, -remove, or -list allowed"));
        }
    };
    let (asking, done, failed) = match op {
        "list" => (
            "Asking all members for installed keys...",
            "Keys gathered, listing cluster keys...",
            "Failed to gather member keys",
        ),
        "install" => (
            "Installing key on all members...",
            "Successfully installed key!",
            "Error installing key",
        ),
        "use" => (
            "Changing primary key on all members...",
            "Successfully changed primary key!",
            "Error changing primary key",
        ),
        _ => (
            "Removing key on all members...",
            "Successfully removed key!",
            "Error removing key",
        ),
    };
    out.line(format!("==> {asking}"))?;
    let mut argv = vec!["keys".to_string(), format!("--{op}")];
    if op != "list" {
        argv.push(key.to_string());
    }
    argv.extend(["--format".to_string(), "json".to_string()]);
    argv.extend(control_flags(p));
    let (bytes, result) = rumor_captured(&argv);
    let response: Option<KeysResponse> = serde_json::from_slice(&bytes).ok();
    match (response, result) {
        (Some(response), result) if response.failed == 0 && result.is_ok() => {
            out.line(format!("==> {done}"))?;
            if op == "list" {
                out.line("")?;
                for line in shapes::keys_list(&response) {
                    out.line(line)?;
                }
            }
            Ok(())
        }
        (Some(response), _) => {
            out.flush()?;
            for line in shapes::keys_failures(&response) {
                eprintln!("{line}");
            }
            eprintln!();
            bail!(
                "{failed}: {}/{} nodes reported failure",
                response.failed,
                response.nodes.len()
            )
        }
        (None, Err(e)) => Err(e.context(failed)),
        (None, Ok(())) => bail!("{failed}: the agent's answer could not be read"),
    }
}

fn info(command: &Command, p: &Parsed, out: &mut Output) -> anyhow::Result<()> {
    let json = format(command, p)?;
    let bytes =
        captured(&with_control(p, ["info", "--format", "json"])).context("Error querying agent")?;
    let info: InfoResponse = serde_json::from_slice(&bytes).context("the agent's info")?;
    let name = regex::escape(&info.cluster.node);
    let argv = with_control(p, ["members", "--format", "json", "--name", &name]);
    let members: MembersResponse =
        serde_json::from_slice(&captured(&argv).context("Error querying agent")?)
            .context("the agent's member list")?;
    let tags = members
        .members
        .into_iter()
        .next()
        .map(|m| m.tags)
        .unwrap_or_default();
    let sections = shapes::info(&info, &tags);
    if json {
        out.json(&sections)?;
    } else {
        for line in shapes::info_text(&sections) {
            out.line(line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_flags_become_rumors() {
        let members = commands::find("members").unwrap();
        let p = members
            .parse(&[
                "-rpc-addr=/run/rumor/control.sock".to_string(),
                "-rpc-auth".to_string(),
                "t0ken".to_string(),
            ])
            .unwrap();
        assert_eq!(
            with_control(&p, ["members"]),
            [
                "members",
                "--control",
                "/run/rumor/control.sock",
                "--control-token",
                "t0ken"
            ]
        );
    }
}
