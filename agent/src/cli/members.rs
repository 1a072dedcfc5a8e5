//! `rumor members`.

use std::net::SocketAddr;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg, split_key_value};
use crate::control::api::{MemberView, MembersQuery, Status};
use crate::logging::rfc3339_utc;

/// List the members of the cluster as this agent sees them.
///
/// Prints one member per line: name, address, status and tags. Filters combine (a member is
/// listed only if it matches all of them); regexes must match the whole value, so
/// `--name web` matches "web" but not "web-1" (use `--name 'web.*'`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only members with this status: alive, leaving, left or failed.
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    status: Option<Status>,
    /// Only members that have tag KEY with a value matching REGEX. Repeat to require several
    /// tags, e.g. --tag role=web --tag dc='eu-.*'.
    #[arg(long = "tag", value_name = "KEY=REGEX", value_parser = parse_tag_filter)]
    tags: Vec<(String, String)>,
    /// Only members whose name matches REGEX.
    #[arg(long, value_name = "REGEX")]
    name: Option<String>,
    /// Also show each member's generation (bumped on every restart), protocol version and
    /// when its status last changed.
    #[arg(long)]
    detailed: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

fn parse_status(s: &str) -> Result<Status, String> {
    s.parse()
}

fn parse_tag_filter(s: &str) -> Result<(String, String), String> {
    split_key_value(s, "REGEX")
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let query = MembersQuery {
        status: args.status,
        name: args.name,
        tags: args.tags,
    };
    let response = args.control.client().members(&query).await?;
    match args.format.format {
        Format::Json => out.json(&response)?,
        Format::Text => {
            let rows: Vec<Vec<String>> = response
                .members
                .iter()
                .map(|m| row(m, args.detailed))
                .collect();
            out.columns(&rows)?;
        }
    }
    Ok(())
}

/// `name  ip:port  status  [generation=N  protocol=N  since=TIME]  k=v,k=v`
fn row(m: &MemberView, detailed: bool) -> Vec<String> {
    let mut cells = vec![
        m.name.clone(),
        SocketAddr::new(m.addr, m.port).to_string(),
        m.status.as_str().to_string(),
    ];
    if detailed {
        cells.push(format!("generation={}", m.generation));
        cells.push(format!("protocol={}", m.protocol));
        cells.push(format!(
            "since={}",
            rfc3339_utc(u128::from(m.status_since_ms) * 1_000_000, 0)
        ));
    }
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    cells.push(tags.join(","));
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn rows_show_address_status_and_tags() {
        let member = MemberView {
            name: "web-1".into(),
            addr: "::1".parse().unwrap(),
            port: 7946,
            status: Status::Alive,
            tags: [
                ("dc".to_string(), "eu".to_string()),
                ("role".into(), "web".into()),
            ]
            .into(),
            generation: 3,
            status_since_ms: 1_000,
            protocol: 1,
        };
        assert_eq!(
            row(&member, false),
            ["web-1", "[::1]:7946", "alive", "dc=eu,role=web"]
        );
        assert_eq!(
            row(&member, true)[3..6],
            ["generation=3", "protocol=1", "since=1970-01-01T00:00:01Z"]
        );
    }

    #[test]
    fn filters_parse_into_the_query() {
        let cli = crate::cli::Cli::try_parse_from([
            "rumor",
            "members",
            "--status",
            "failed",
            "--tag",
            "role=web|api",
            "--tag",
            "dc=eu",
        ])
        .unwrap();
        let crate::cli::Command::Members(args) = cli.command else {
            panic!("expected members")
        };
        assert_eq!(args.status, Some(Status::Failed));
        assert_eq!(args.tags[0], ("role".to_string(), "web|api".to_string()));
        let err =
            crate::cli::Cli::try_parse_from(["rumor", "members", "--tag", "role"]).unwrap_err();
        assert!(err.to_string().contains("expected KEY=REGEX"), "{err}");
        assert!(crate::cli::Cli::try_parse_from(["rumor", "members", "--status", "dead"]).is_err());
    }
}
