//! `rumor query`.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::ArgAction;
use serde::Serialize;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg, parse_duration, split_key_value};
use crate::control::api::{Payload, QueryRequest, QueryUpdate};
use crate::control::client::LineStream;

/// Ask the cluster a question and collect the answers.
///
/// Every node that passes the filters runs its `query` / `query:NAME` handlers with the payload
/// on stdin; the stdout of a handler that exits 0 is that node's answer. The command prints
/// acks and answers as they arrive and returns as soon as every expected node has answered —
/// it only waits out the timeout when some node stays silent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Query name; handlers select it with the filter `query:NAME`.
    name: String,
    /// Payload handed to the handlers on stdin; `-` reads it from this command's stdin.
    #[arg(default_value = "")]
    payload: String,
    /// Only this node answers (repeatable).
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<String>,
    /// Only nodes whose tag KEY fully matches REGEX answer (repeatable; all must match).
    #[arg(long = "tag", value_name = "KEY=REGEX", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// How long to wait for answers, e.g. 500ms, 10s [default: grows with the cluster size].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Do not ask nodes to acknowledge receipt (fewer packets; only answers come back).
    #[arg(long = "no-ack", action = ArgAction::SetFalse)]
    ack: bool,
    #[command(flatten)]
    format: FormatArg,
    #[command(flatten)]
    control: ControlArgs,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    split_key_value(s, "REGEX")
}

/// `--format json` output: the acks and the answers by node, as Serf's JSON output has them.
#[derive(Debug, Default, Serialize)]
pub struct QueryResult {
    pub acks: Vec<String>,
    pub responses: BTreeMap<String, Payload>,
    /// Nodes that passed the filters but sent no answer (no handler, or it failed), and why.
    pub no_answer: BTreeMap<String, String>,
    /// Expected nodes never heard from before the timeout.
    pub missing: Vec<String>,
    pub timed_out: bool,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let request = QueryRequest {
        name: args.name.clone(),
        payload: Payload(if args.payload == "-" {
            super::event::read_stdin()?
        } else {
            args.payload.into_bytes()
        }),
        nodes: args.nodes,
        tags: args.tags.into_iter().collect(),
        timeout_ms: args.timeout.map(|d| d.as_millis() as u64),
        ack: args.ack,
    };
    let stream = args.control.client().query(&request).await?;
    let text = args.format.format == Format::Text;
    let result = follow(stream, out, text, &args.name).await?;
    if !text {
        out.json(&result)?;
    }
    Ok(())
}

/// Reads a query stream to its end, printing progress lines in text mode.
pub async fn follow(
    mut stream: LineStream,
    out: &mut Output,
    text: bool,
    name: &str,
) -> anyhow::Result<QueryResult> {
    let mut result = QueryResult::default();
    while let Some(line) = stream.next_line().await? {
        let line: QueryUpdate = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!("the agent sent a query line this client does not understand: {e}")
        })?;
        let message = match line {
            QueryUpdate::Started {
                expected,
                timeout_ms,
            } => format!(
                "Query {name:?} sent: {} node(s) expected to answer, timeout {}",
                expected.len(),
                humantime::format_duration(Duration::from_millis(timeout_ms))
            ),
            QueryUpdate::Ack { node } => {
                result.acks.push(node.clone());
                format!("Ack from {node}")
            }
            QueryUpdate::Answer {
                node,
                payload,
                truncated,
            } => {
                let shown = String::from_utf8_lossy(&payload.0).trim_end().to_string();
                result.responses.insert(node.clone(), payload);
                let note = if truncated {
                    " (truncated to max_response_bytes)"
                } else {
                    ""
                };
                format!("Response from {node}{note}: {shown}")
            }
            QueryUpdate::NoAnswer { node, reason } => {
                result.no_answer.insert(node.clone(), reason.clone());
                format!("No answer from {node}: {reason}")
            }
            QueryUpdate::Done { timed_out, missing } => {
                result.timed_out = timed_out;
                result.missing = missing;
                let mut summary = format!(
                    "Total acks: {}, responses: {}",
                    result.acks.len(),
                    result.responses.len()
                );
                if !result.missing.is_empty() {
                    summary.push_str(&format!(
                        "; timed out waiting for: {}",
                        result.missing.join(", ")
                    ));
                }
                summary
            }
        };
        if text {
            out.line(message)?;
            out.flush()?;
        }
    }
    Ok(result)
}
