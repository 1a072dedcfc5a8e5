//! `rumor info`.

use serde_json::Value;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};

/// Show this agent's state: version, uptime, node name, addresses, member counts, counters.
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
                map.remove("handlers"); // shown as a table below
            }
            for line in render(&value, 0) {
                out.line(line)?;
            }
            for line in handler_lines(&info.handlers) {
                out.line(line)?;
            }
        }
    }
    Ok(())
}

/// The handlers as a table: counters and how the last run ended.
fn handler_lines(handlers: &[rumor_handlers::HandlerStatus]) -> Vec<String> {
    if handlers.is_empty() {
        return vec!["handlers: none (add --event-handler or [[handler]] tables)".to_string()];
    }
    let mut rows = vec![
        [
            "NAME", "FILTER", "RUNS", "FAILED", "TIMEOUTS", "DROPPED", "QUEUED", "LAST RUN",
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
            h.queued.to_string(),
            last,
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
