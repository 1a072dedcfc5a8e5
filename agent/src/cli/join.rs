//! `rumor join`.

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};

/// Join the cluster through one or more of its members.
///
/// The agent contacts each address and exchanges its full state with the member there; one
/// answer is enough to be in the cluster. Fails only if no address answered.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gossip address of an existing member, as HOST:PORT (HOST may be a DNS name).
    #[arg(value_name = "ADDR", required = true)]
    addrs: Vec<String>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let total = args.addrs.len();
    let report = args.control.client().join(args.addrs).await?;
    if args.format.format == Format::Json {
        out.json(&report)?;
    } else {
        out.line(format!(
            "Joined the cluster through {} of {total} address{}.",
            report.joined,
            if total == 1 { "" } else { "es" }
        ))?;
        for error in &report.errors {
            out.line(format!("  failed: {error}"))?;
        }
    }
    if report.joined == 0 {
        anyhow::bail!("could not join any address");
    }
    Ok(())
}
