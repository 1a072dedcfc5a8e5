//! `rumor keys`.

use std::collections::BTreeMap;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};
use crate::control::api::{KeyOp, KeysRequest, KeysResponse};

/// Manage the cluster's encryption keys on every member at once.
///
/// Rotate without downtime: `--install NEW` (every node can now open NEW), `--use NEW` (every
/// node now seals with NEW), `--remove OLD`. Each node persists its keyring in its data
/// directory. Prints each node's outcome; exits 1 if any node failed or did not answer.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("op").required(true).args(["list", "install", "use_key", "remove"])))]
pub struct Args {
    /// List the keys installed on the members, and how many have each.
    #[arg(long)]
    list: bool,
    /// Install KEY on every member (it opens messages, but does not seal yet).
    #[arg(long, value_name = "KEY")]
    install: Option<String>,
    /// Make the installed KEY the primary (sealing) key on every member.
    #[arg(long = "use", value_name = "KEY")]
    use_key: Option<String>,
    /// Remove KEY from every member; the primary key cannot be removed.
    #[arg(long, value_name = "KEY")]
    remove: Option<String>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let (op, key, verb) = if args.list {
        (KeyOp::List, None, "list keys")
    } else if let Some(key) = args.install {
        (KeyOp::Install, Some(key), "install the key")
    } else if let Some(key) = args.use_key {
        (KeyOp::Use, Some(key), "use the key")
    } else {
        (KeyOp::Remove, args.remove, "remove the key")
    };
    let response = args.control.client().keys(&KeysRequest { op, key }).await?;
    match args.format.format {
        Format::Json => out.json(&response)?,
        Format::Text => {
            for line in render(&response, op) {
                out.line(line)?;
            }
        }
    }
    if response.failed > 0 {
        out.flush()?;
        anyhow::bail!(
            "{} of {} nodes could not {verb}",
            response.failed,
            response.nodes.len()
        );
    }
    Ok(())
}

fn render(response: &KeysResponse, op: KeyOp) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = response.nodes.values().filter(|n| n.ok).count();
    if op == KeyOp::List {
        // Each key: how many nodes have it, and on how many it is the primary.
        let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for node in response.nodes.values().filter(|n| n.ok) {
            for (i, key) in node.keys.iter().enumerate() {
                let entry = counts.entry(key).or_default();
                entry.0 += 1;
                if i == 0 {
                    entry.1 += 1;
                }
            }
        }
        lines.push(format!("Keys installed on {ok} responding node(s):"));
        for (key, (have, primary)) in counts {
            lines.push(format!("  {key}  on {have}/{ok}, primary on {primary}"));
        }
    }
    for (node, outcome) in &response.nodes {
        match &outcome.error {
            Some(e) => lines.push(format!("{node}: error: {e}")),
            None if op != KeyOp::List => {
                lines.push(format!("{node}: ok ({} keys)", outcome.keys.len()))
            }
            None => {}
        }
    }
    lines
}
