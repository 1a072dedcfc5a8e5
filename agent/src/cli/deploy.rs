//! `rumor deploy status APP`: the fleet's state of an app's container deploys
//! (docs/containers.md). A `deploy-status` query under the hood: every host whose docker
//! handler manages the app answers with its version, port, state and the reason of a failure.

use std::collections::BTreeMap;
use std::time::Duration;

use rumor_handlers::docker::STATUS_QUERY;
use rumor_handlers::docker::worker::AppStatus;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg, parse_duration};
use crate::control::api::{Payload, QueryRequest};

/// Container deploys: start one with `rumor event deploy 'APP IMAGE:TAG'`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DeployCommand,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, clap::Subcommand)]
enum DeployCommand {
    /// Show each host's version, port and deploy state of APP (a query to the cluster).
    Status {
        app: String,
        /// How long to wait for the hosts' answers [default: grows with the cluster size].
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<Duration>,
        #[command(flatten)]
        format: FormatArg,
    },
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let control = args.control;
    let DeployCommand::Status {
        app,
        timeout,
        format,
    } = args.command;
    let request = QueryRequest {
        name: STATUS_QUERY.to_string(),
        payload: Payload(app.clone().into_bytes()),
        nodes: Vec::new(),
        tags: BTreeMap::new(),
        timeout_ms: timeout.map(|d| d.as_millis() as u64),
        ack: true,
    };
    let stream = control.client().query(&request).await?;
    let result = super::query::follow(stream, out, false, STATUS_QUERY).await?;
    let mut hosts = Vec::new();
    for (node, payload) in &result.responses {
        match serde_json::from_slice::<AppStatus>(&payload.0) {
            Ok(status) => hosts.push(status),
            Err(e) => anyhow::bail!("{node} answered something that is not a deploy status: {e}"),
        }
    }
    if format.format != Format::Text {
        return Ok(out.json(&hosts)?);
    }
    if hosts.is_empty() {
        out.line(format!(
            "No host manages app {app:?} (no docker handler for it answered)"
        ))?;
        return Ok(());
    }
    let dash = || "-".to_string();
    let mut rows = vec![
        ["NODE", "VERSION", "PORT", "STATE", "REASON"]
            .map(String::from)
            .to_vec(),
    ];
    for h in hosts {
        rows.push(vec![
            h.node,
            h.version.unwrap_or_else(dash),
            h.port.map_or_else(dash, |p| p.to_string()),
            h.state,
            h.reason.unwrap_or_default(),
        ]);
    }
    Ok(out.columns(&rows)?)
}
