//! `rumor event`.

use std::io::Read;

use clap::ArgAction;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg};
use crate::control::api::MAX_REQUEST_BYTES;

/// Send a user event to every member of the cluster.
///
/// Handlers subscribed to `user` or `user:NAME` run on every member with the payload on their
/// stdin and SERF_USER_EVENT=NAME in their environment. Delivery is at least once to each
/// member alive while the event spreads; a handler sees it once.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Whether handlers may coalesce this event with newer ones of the same name (only the
    /// latest is handled when several arrive together). Pass --coalesce=false to have every
    /// event handled.
    #[arg(long, action = ArgAction::Set, default_value_t = true, value_name = "BOOL")]
    coalesce: bool,
    /// Event name; handlers select it with the filter `user:NAME`.
    name: String,
    /// Payload handed to the handlers on stdin; `-` reads it from this command's stdin.
    /// Name and payload together must fit the cluster's max_event_bytes.
    #[arg(default_value = "")]
    payload: String,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let payload = if args.payload == "-" {
        read_stdin()?
    } else {
        args.payload.into_bytes()
    };
    let client = args.control.client();
    let response = client
        .event(args.name.clone(), payload, args.coalesce)
        .await?;
    match args.format.format {
        Format::Json => out.json(&response)?,
        Format::Text => out.line(format!(
            "Event {:?} dispatched (ltime {}, coalesce {})",
            args.name, response.ltime, args.coalesce
        ))?,
    }
    Ok(())
}

/// The payload from this command's stdin (`-`), within the control API's request limit.
pub(super) fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut payload = Vec::new();
    std::io::stdin()
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut payload)
        .map_err(|e| anyhow::anyhow!("cannot read the payload from stdin: {e}"))?;
    if payload.len() > MAX_REQUEST_BYTES {
        anyhow::bail!(
            "the payload on stdin is larger than {MAX_REQUEST_BYTES} bytes, the control API's request limit"
        );
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> super::Args {
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Event(args) => args,
            other => panic!("expected event, got {other:?}"),
        }
    }

    #[test]
    fn coalesce_defaults_to_true_and_takes_a_value() {
        let args = parse(&["rumor", "event", "deploy", "web v42"]);
        assert!(args.coalesce);
        assert_eq!(
            (args.name.as_str(), args.payload.as_str()),
            ("deploy", "web v42")
        );
        assert!(!parse(&["rumor", "event", "--coalesce=false", "deploy"]).coalesce);
        assert!(!parse(&["rumor", "event", "--coalesce", "false", "deploy"]).coalesce);
        assert!(parse(&["rumor", "event", "--coalesce=true", "deploy"]).coalesce);
        assert_eq!(parse(&["rumor", "event", "deploy"]).payload, "");
        assert!(Cli::try_parse_from(["rumor", "event", "--coalesce=maybe", "deploy"]).is_err());
    }
}
