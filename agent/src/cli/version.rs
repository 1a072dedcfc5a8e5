//! `rumor version`.

use super::output::Output;
use crate::cluster::wire::PROTOCOL_VERSION;

/// Print rumor's version and the gossip protocol version it speaks.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: Args, out: &mut Output) -> anyhow::Result<()> {
    out.line(format!(
        "rumor {} (protocol {PROTOCOL_VERSION})",
        env!("CARGO_PKG_VERSION")
    ))?;
    Ok(())
}
