//! `rumor reload`.

use super::ControlArgs;
use super::output::Output;

/// Reload the agent's configuration file, handlers and plugins (same as sending it SIGHUP).
///
/// If the new configuration is invalid the agent keeps running with the old one and this
/// command fails with the reason.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let response = args.control.client().reload().await?;
    if response.message.trim().is_empty() {
        out.line("Configuration reloaded.")?;
    } else {
        out.line(response.message.trim())?;
    }
    Ok(())
}
