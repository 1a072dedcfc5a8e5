//! `rumor monitor`.

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};
use crate::control::api::{Event, MonitorLine};
use crate::logging::parse_level;

/// Stream the agent's logs and cluster events until Ctrl-C.
///
/// Text output shows `TIME LEVEL target: message` for logs and `EVENT ...` lines for member
/// changes and user events; --format json prints the API's NDJSON lines unchanged. The level
/// is independent of the agent's own log level: --log-level debug shows debug lines even if
/// the agent logs at info.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Least severe log level to show: trace, debug, info, warn or error.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    log_level: tracing::Level,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let client = args.control.client();
    let mut stream = client.monitor(args.log_level).await?;
    // On stderr, so stdout stays only the stream (NDJSON with --format json); an idle agent
    // prints nothing else for a long time, and a silent terminal reads as a hang.
    eprintln!(
        "Streaming logs at {} and above and cluster events from the agent at {} (Ctrl-C to stop)",
        args.log_level.as_str().to_lowercase(),
        client.endpoint()
    );
    loop {
        let line = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            line = stream.next_line() => line?,
        };
        let Some(line) = line else {
            anyhow::bail!(
                "the agent at {} ended the monitor stream: it stopped or is restarting",
                client.endpoint()
            );
        };
        if line.trim().is_empty() {
            continue;
        }
        match args.format.format {
            Format::Json => out.line(&line)?,
            Format::Text => match serde_json::from_str::<MonitorLine>(&line) {
                Ok(parsed) => out.line(render(&parsed))?,
                Err(_) => out.line(&line)?,
            },
        }
        out.flush()?;
    }
}

/// One monitor line as text.
fn render(line: &MonitorLine) -> String {
    match line {
        MonitorLine::Log(log) => format!(
            "{} {:>5} {}: {}",
            log.ts, log.level, log.target, log.message
        ),
        MonitorLine::Event {
            event: Event::Member { kind, members },
        } => {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            format!("EVENT {kind}: {}", names.join(", "))
        }
        MonitorLine::Event {
            event: Event::User(user),
        } => format!(
            "EVENT user {} ltime={} origin={} payload={:?}",
            user.name,
            user.ltime,
            user.origin,
            String::from_utf8_lossy(&user.payload)
        ),
        MonitorLine::Event {
            event: Event::Query(query),
        } => format!(
            "EVENT query {} ltime={} origin={} payload={:?}",
            query.name,
            query.ltime,
            query.origin,
            String::from_utf8_lossy(&query.payload)
        ),
        MonitorLine::Lagged { missed } => {
            format!("-- {missed} lines dropped: this monitor fell behind the agent --")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::LogLine;
    use rumor_handlers::event::{MemberEventKind, MemberInfo, UserEvent};

    #[test]
    fn renders_logs_and_events() {
        let log = MonitorLine::Log(LogLine {
            ts: "2025-01-01T00:00:00.000000Z".into(),
            level: "INFO".into(),
            target: "rumor::cluster".into(),
            message: "joined peer=\"b\"".into(),
        });
        assert_eq!(
            render(&log),
            "2025-01-01T00:00:00.000000Z  INFO rumor::cluster: joined peer=\"b\""
        );
        let member = |name: &str| MemberInfo {
            name: name.into(),
            addr: "10.0.0.1".parse().unwrap(),
            port: 7946,
            tags: Default::default(),
        };
        let join = MonitorLine::Event {
            event: Event::Member {
                kind: MemberEventKind::Join,
                members: vec![member("a"), member("b")],
            },
        };
        assert_eq!(render(&join), "EVENT member-join: a, b");
        let user = MonitorLine::Event {
            event: Event::User(UserEvent {
                ltime: 3,
                name: "deploy".into(),
                payload: b"web v42".to_vec(),
                coalesce: true,
                origin: "x".into(),
            }),
        };
        assert_eq!(
            render(&user),
            "EVENT user deploy ltime=3 origin=x payload=\"web v42\""
        );
    }
}
