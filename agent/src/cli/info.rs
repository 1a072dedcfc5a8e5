//! `rumor info`.

use serde_json::Value;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};
use crate::control::api::{HandlerStatus, PluginStatus, ReloadStatus};

/// Show this agent's state: version, uptime, whether gossip is encrypted, node name,
/// addresses, member counts, counters, and the handlers with what each runs.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let info = args.control.client().info().await?;
    match args.format.format {
        Format::Json => out.json(&info)?,
        Format::Text => {
            let mut value = serde_json::to_value(&info)?;
            if let Some(map) = value.as_object_mut() {
                // Shown as lists below.
                for key in ["handlers", "plugins", "reload"] {
                    map.remove(key);
                }
            }
            for line in render(&value, 0) {
                out.line(line)?;
            }
            for line in handler_lines(&info.handlers) {
                out.line(line)?;
            }
            for line in plugin_lines(&info.plugins, &info.reload) {
                out.line(line)?;
            }
        }
    }
    Ok(())
}

/// The handlers as a table: counters and how the last run ended.
fn handler_lines(handlers: &[HandlerStatus]) -> Vec<String> {
    if handlers.is_empty() {
        return vec!["handlers: none (add --event-handler or [[handler]] tables)".to_string()];
    }
    let mut rows = vec![
        [
            "NAME",
            "FILTER",
            "RUNS",
            "FAILED",
            "TIMEOUTS",
            "DROPPED",
            "NOT STARTED",
            "QUEUED",
            "LAST RUN",
            "COMMAND",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for h in handlers {
        let last = match &h.last {
            None if h.running => "running".to_string(),
            None => "never ran".to_string(),
            Some(l) => {
                let end = match (l.timed_out, l.exit_code, l.signal) {
                    // A WASM run stopped by a limit says which: "out of fuel".
                    _ if l.exit_code.is_none() && l.error.is_some() => {
                        l.error.clone().unwrap_or_default()
                    }
                    (true, _, _) => "timed out".to_string(),
                    (_, Some(code), _) => format!("exit {code}"),
                    (_, None, Some(sig)) => format!("signal {sig}"),
                    _ => "ended".to_string(),
                };
                let at =
                    crate::logging::rfc3339_utc(u128::from(l.finished_at_unix_ms) * 1_000_000, 0);
                format!("{end} after {} ms at {at}", l.duration_ms)
            }
        };
        rows.push(vec![
            h.name.clone(),
            h.filter.clone(),
            h.runs.to_string(),
            h.failures.to_string(),
            h.timeouts.to_string(),
            h.dropped.to_string(),
            h.start_failures.to_string(),
            h.queued.to_string(),
            last,
            h.command.clone(),
        ]);
    }
    let mut lines = vec!["handlers:".to_string()];
    lines.extend(
        super::output::align(&rows)
            .into_iter()
            .map(|l| format!("  {l}")),
    );
    lines
}

/// The installed plugins, and what the last reload could not apply.
fn plugin_lines(plugins: &[PluginStatus], reload: &ReloadStatus) -> Vec<String> {
    let mut lines = Vec::new();
    if !plugins.is_empty() {
        lines.push("plugins:".to_string());
        for p in plugins {
            let state = match &p.error {
                None => "ok".to_string(),
                Some(e) => format!("broken, the last good version runs: {e}"),
            };
            lines.push(format!("  {} {}: {state}", p.name, p.version));
        }
    }
    lines.push(format!(
        "reloads: {} ({} found something broken)",
        reload.reloads, reload.failures
    ));
    lines.extend(reload.errors.iter().map(|e| format!("  {e}")));
    lines
}

/// Renders a JSON object as indented `key = value` lines (keys sorted), followed by its
/// nested objects as sections.
fn render(value: &Value, depth: usize) -> Vec<String> {
    let indent = "  ".repeat(depth);
    let Value::Object(map) = value else {
        return vec![format!("{indent}{value}")];
    };
    let width = map
        .iter()
        .filter(|(_, v)| !v.is_object())
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    let mut lines = Vec::new();
    for (key, value) in map.iter().filter(|(_, v)| !v.is_object()) {
        match value {
            Value::String(s) => lines.push(format!("{indent}{key:<width$} = {s}")),
            other => lines.push(format!("{indent}{key:<width$} = {other}")),
        }
    }
    for (key, value) in map.iter().filter(|(_, v)| v.is_object()) {
        lines.push(format!("{indent}{key}:"));
        lines.extend(render(value, depth + 1));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_table_shows_what_each_handler_runs() {
        let handler = HandlerStatus {
            name: "lb".into(),
            filter: "member-join,member-leave".into(),
            command: "/etc/serf/handler.sh".into(),
            runs: 3,
            failures: 0,
            timeouts: 0,
            dropped: 0,
            start_failures: 0,
            queued: 0,
            running: false,
            last: None,
            runtime: None,
        };
        let lines = handler_lines(&[handler]);
        assert_eq!(lines[0], "handlers:");
        assert!(lines[1].ends_with("LAST RUN   COMMAND"), "{lines:?}");
        assert!(
            lines[2].starts_with("  lb") && lines[2].ends_with("never ran  /etc/serf/handler.sh"),
            "{lines:?}"
        );
    }

    #[test]
    fn renders_sections_with_aligned_keys() {
        let value = serde_json::json!({
            "agent": {"version": "0.1.0", "pid": 42},
            "cluster": {"node": "a", "counters": {"packets_sent": 3}},
        });
        assert_eq!(
            render(&value, 0),
            [
                "agent:",
                "  pid     = 42",
                "  version = 0.1.0",
                "cluster:",
                "  node = a",
                "  counters:",
                "    packets_sent = 3",
            ]
        );
    }
}
