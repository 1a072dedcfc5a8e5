//! `rumor keygen`.

use super::output::Output;
use crate::cluster::keyring::Key;

/// Print a new random encryption key (base64, 32 bytes: AES-256-GCM).
///
/// Start every agent of a new cluster with `--encrypt KEY`, or add it to a running cluster
/// with `rumor keys --install KEY` then `rumor keys --use KEY`. Keep it secret: anyone with the
/// key can join the cluster and send events.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, out: &mut Output) -> anyhow::Result<()> {
    out.line(Key::generate().to_base64())?;
    Ok(())
}
