//! `rumor tags`.

use super::output::Output;
use super::{ControlArgs, Format, FormatArg, split_key_value};

/// Set or delete tags of this agent's node; the change spreads to the whole cluster.
///
/// Handlers see a member-update event on every member. Prints the node's tags afterwards.
#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("change").required(true).multiple(true).args(["set", "delete"])
))]
pub struct Args {
    /// Set tag KEY to VALUE. Repeatable: --set role=web --set dc=eu.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_tag)]
    set: Vec<(String, String)>,
    /// Delete tag KEY. Repeatable.
    #[arg(long, value_name = "KEY")]
    delete: Vec<String>,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    split_key_value(s, "VALUE")
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let set = args.set.into_iter().collect();
    let response = args.control.client().tags(set, args.delete).await?;
    match args.format.format {
        Format::Json => out.json(&response)?,
        Format::Text => {
            for (key, value) in &response.tags {
                out.line(format!("{key}={value}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn set_takes_key_value_pairs() {
        let cli = Cli::try_parse_from([
            "rumor", "tags", "--set", "role=web", "--set", "x==y", "--delete", "dc",
        ])
        .unwrap();
        let Command::Tags(args) = cli.command else {
            panic!("expected tags")
        };
        assert_eq!(
            args.set,
            [("role".into(), "web".into()), ("x".into(), "=y".into())]
        );
        assert_eq!(args.delete, ["dc"]);
    }

    #[test]
    fn bad_input_is_a_clear_usage_error() {
        let err = Cli::try_parse_from(["rumor", "tags", "--set", "role"]).unwrap_err();
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
        let err = Cli::try_parse_from(["rumor", "tags", "--set", "=web"]).unwrap_err();
        assert!(err.to_string().contains("empty key"), "{err}");
        let err = Cli::try_parse_from(["rumor", "tags"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
