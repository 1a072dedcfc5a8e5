//! `rumor config`: working with configuration files.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::Output;
use crate::config::serf::import_serf;

/// Work with configuration files (import Serf's).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    ImportSerf(ImportSerfArgs),
}

/// Print the rumor.toml equivalent of Serf agent configuration.
///
/// Reads Serf's JSON config files and config folders (their *.json files in lexical order) in
/// the order given, merges them as `serf agent -config-file/-config-dir` does, and prints the
/// equivalent rumor.toml: node_name, role and tags, tags_file, bind, advertise, encrypt_key or
/// keyring_file, event_handlers (as [[handler]] tables with Serf's coalescing), start_join,
/// retry_join, rejoin_after_leave, log_level, profile, timeouts, size limits, rpc_addr and
/// rpc_auth. Serf settings rumor has no equivalent for are listed as comments with the
/// reason. Example: rumor config import-serf /etc/serf/serf.json /etc/serf/conf.d > rumor.toml
#[derive(Debug, clap::Args)]
struct ImportSerfArgs {
    /// Serf JSON config files and config folders, in Serf's order.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
}

pub fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    match args.command {
        ConfigCommand::ImportSerf(args) => {
            let text = import_serf(&args.paths)?;
            out.write_str(&text)?;
        }
    }
    Ok(())
}
