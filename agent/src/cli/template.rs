//! `rumor template render`: a template rendered against the live cluster, printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use rumor_handlers::template::{Compiled, Data, TemplateSource};
use rumor_handlers::{LocalNode, Setting};

use super::output::Output;
use super::{ControlArgs, split_key_value};
use crate::control::api::MembersQuery;
use crate::member_view::for_handlers;

/// Templates: see what one renders before a handler writes it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TemplateCommand,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, clap::Subcommand)]
enum TemplateCommand {
    Render(RenderArgs),
}

/// Render a template against the cluster as this agent sees it now, and print the result.
/// Nothing is written, checked or reloaded.
///
/// The template sees what a template handler sees: `members`, `node` and `settings` (the
/// plugin's with --plugin, then each --set). Errors (a typo, an undefined variable) name the
/// template and line.
#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// The template file.
    file: PathBuf,
    /// A setting, KEY=VALUE (repeatable): `{{ settings.KEY }}`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// Start from the settings of this installed plugin (and find its includes in its folder).
    #[arg(long, value_name = "NAME")]
    plugin: Option<String>,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    split_key_value(s, "VALUE")
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let client = args.control.client();
    let TemplateCommand::Render(args) = args.command;
    let info = client.info().await?;
    let members = client.members(&MembersQuery::default()).await?.members;
    let mut settings: BTreeMap<String, Setting> = BTreeMap::new();
    let mut include_dirs = Vec::new();
    if let Some(plugin) = &args.plugin {
        settings = client.plugin_info(plugin).await?.plugin.settings;
        include_dirs.push(info.agent.data_dir.join("plugins").join(plugin));
    }
    for (key, text) in args.set {
        let value = match settings.get(&key) {
            Some(Setting::Integer(_)) => Setting::Integer(
                text.parse()
                    .with_context(|| format!("--set {key}: {text:?} is not an integer"))?,
            ),
            Some(Setting::Boolean(_)) => Setting::Boolean(
                text.parse()
                    .with_context(|| format!("--set {key}: {text:?} is not true or false"))?,
            ),
            _ => Setting::Text(text),
        };
        settings.insert(key, value);
    }
    let local = LocalNode {
        name: info.cluster.node.clone(),
        tags: members
            .iter()
            .find(|m| m.name == info.cluster.node)
            .map(|m| m.tags.clone())
            .unwrap_or_default(),
    };
    let source = TemplateSource::read(&args.file, include_dirs)?;
    let members = for_handlers(&members);
    let text = Compiled::new(&source)?.render(&Data {
        members: &members,
        local: &local,
        settings: &settings,
    })?;
    out.write_str(&text)?;
    Ok(())
}
