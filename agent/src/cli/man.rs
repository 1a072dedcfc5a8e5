//! `rumor man DIR`: the man pages, generated from the same clap definitions as `--help`, so
//! they never drift from it. One page for `rumor`, one per command (`rumor-members.1`,
//! `rumor-plugin-install.1`, ...), as git and cargo ship theirs.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;
use super::output::Output;

/// Write the man pages (rumor.1 and one per command, e.g. rumor-members.1) into a directory.
///
/// The Debian package installs them under /usr/share/man/man1; by hand: `rumor man
/// /usr/local/share/man/man1`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to write into (created if missing).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

pub fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("cannot write the man pages into {}", args.dir.display()))?;
    let pages = std::fs::read_dir(&args.dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count();
    out.line(format!(
        "{pages} man pages written to {}",
        args.dir.display()
    ))?;
    Ok(())
}
