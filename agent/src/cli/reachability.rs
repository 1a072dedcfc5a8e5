//! `rumor reachability`.

use std::time::Duration;

use super::output::Output;
use super::query::follow;
use super::{ControlArgs, Format, FormatArg, parse_duration};
use crate::control::api::ReachabilityRequest;

/// Check that every live member answers through the gossip layer.
///
/// Sends rumor's built-in ping query; every node answers at once without any handler. Exits
/// with status 1 and names the silent nodes when some did not answer in time.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to wait for answers [default: grows with the cluster size].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let request = ReachabilityRequest {
        timeout_ms: args.timeout.map(|d| d.as_millis() as u64),
    };
    let stream = args.control.client().reachability(&request).await?;
    let text = args.format.format == Format::Text;
    let result = follow(stream, out, text, "reachability").await?;
    if !text {
        out.json(&result)?;
    }
    if !result.missing.is_empty() {
        out.flush()?;
        anyhow::bail!("no answer from {}", result.missing.join(", "));
    }
    if text {
        out.line("Successfully contacted all live nodes")?;
    }
    Ok(())
}
