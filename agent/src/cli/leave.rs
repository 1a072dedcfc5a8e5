//! `rumor leave`.

use super::ControlArgs;
use super::output::Output;

/// Leave the cluster gracefully and stop the agent.
///
/// The agent tells the cluster it is leaving, waits (briefly) for that to spread so the other
/// members see a leave rather than a failure, then exits. Returns when the leave is complete.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    args.control.client().leave().await?;
    out.line("Graceful leave complete; the agent is shutting down.")?;
    Ok(())
}
