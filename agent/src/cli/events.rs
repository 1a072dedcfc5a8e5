//! `rumor events`.

use std::io::Write;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};
use crate::logging::rfc3339_utc;

/// List the user events this agent keeps for members that missed them (the last
/// `event_retention` events, at most `event_retention_age` old), in the order they arrived:
/// name, Lamport time, sending node, time received, payload size.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let response = args.control.client().events().await?;
    if args.format.format == Format::Json {
        out.json(&response)?;
        return Ok(());
    }
    if response.events.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "No user events kept (none received within the event retention)."
        );
        return Ok(());
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "LTIME".into(),
        "ORIGIN".into(),
        "RECEIVED".into(),
        "PAYLOAD".into(),
    ]];
    rows.extend(response.events.iter().map(|e| {
        vec![
            e.name.clone(),
            e.ltime.to_string(),
            e.origin.clone(),
            rfc3339_utc(e.received_unix_ns, 3),
            format!("{} bytes", e.payload_bytes),
        ]
    }));
    out.columns(&rows)?;
    Ok(())
}
