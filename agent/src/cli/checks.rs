//! `rumor checks`.

use std::io::Write;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};
use crate::control::api::CheckStatus;
use crate::logging::rfc3339_utc;

/// List this agent's health checks: name, state (the tag health_NAME it publishes), what it
/// runs, since when it is in that state, and its last output.
///
/// A state changes after `rise` passing or `fall` failing results in a row; LAST is the last
/// run's own result. --verbose prints each check's whole last output (at most 4 KiB).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print each check's whole last output under it, not just its first line.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let response = args.control.client().checks().await?;
    if args.format.format == Format::Json {
        out.json(&response)?;
        return Ok(());
    }
    if response.checks.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "No health checks (add [[check]] tables to the config file; see docs/health.md)."
        );
        return Ok(());
    }
    if args.verbose {
        for check in &response.checks {
            out.columns(&[header(), row(check)])?;
            for line in check.output.lines() {
                out.line(format!("    {line}"))?;
            }
            out.line("")?;
        }
        return Ok(());
    }
    let mut rows = vec![header()];
    rows.extend(response.checks.iter().map(row));
    out.columns(&rows)?;
    Ok(())
}

fn header() -> Vec<String> {
    ["NAME", "STATE", "LAST", "KIND", "TARGET", "SINCE", "OUTPUT"]
        .map(String::from)
        .to_vec()
}

/// `name  state  last  kind  target  since  first line of output`
fn row(c: &CheckStatus) -> Vec<String> {
    let state = if c.pending {
        format!("{} (not run yet)", c.state)
    } else {
        c.state.to_string()
    };
    vec![
        c.name.clone(),
        state,
        c.last_result.map_or("-".to_string(), |s| s.to_string()),
        c.kind.clone(),
        shorten(&c.target, 40),
        rfc3339_utc(u128::from(c.since_unix_ms) * 1_000_000, 0),
        shorten(c.output.lines().next().unwrap_or(""), 60),
    ]
}

/// At most `max` characters of `text`, with `…` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::State;

    #[test]
    fn a_row_says_state_kind_and_the_first_line() {
        let check = CheckStatus {
            name: "web".into(),
            kind: "http".into(),
            target: "http://127.0.0.1:8080/health".into(),
            state: State::Critical,
            pending: false,
            output: "HTTP 500 Internal Server Error\ndetails".into(),
            last_result: Some(State::Critical),
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
            notify: None,
            runs: 4,
            transitions: 2,
            last_run_unix_ms: Some(2_000),
            since_unix_ms: 1_000,
        };
        assert_eq!(
            row(&check),
            [
                "web",
                "critical",
                "critical",
                "http",
                "http://127.0.0.1:8080/health",
                "1970-01-01T00:00:01Z",
                "HTTP 500 Internal Server Error"
            ]
        );
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
