//! `rumor force-leave`.

use super::ControlArgs;
use super::output::Output;

/// Mark a failed member as having left the cluster.
///
/// Use it for a node that is gone for good, so the cluster stops trying to reach it and
/// handlers see a member-leave. It only applies to failed members: a live member must run
/// `rumor leave` itself.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Name of the failed member.
    node: String,
    /// Also remove the member from the member list at once, instead of keeping it as "left"
    /// until it is reaped.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let client = args.control.client();
    client.force_leave(args.node.clone(), args.prune).await?;
    if args.prune {
        out.line(format!(
            "Member {:?} forced to leave and pruned from the member list.",
            args.node
        ))?;
    } else {
        out.line(format!("Member {:?} forced to leave.", args.node))?;
    }
    Ok(())
}
