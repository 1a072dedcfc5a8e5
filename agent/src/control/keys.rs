//! `POST /v1/keys`: cluster-wide key management. The change goes to every member as one of
//! rumor's internal queries; each node applies it to its keyring (and keyring file) and
//! answers with its keys or its error. The response lists every node's outcome.

use std::collections::BTreeMap;

use hyper::StatusCode;

use super::api::{KeyOp, KeysRequest, KeysResponse, NodeKeys};
use super::context::ControlContext;
use super::reply::{ApiError, Reply, cluster_error, error, json};
use crate::cluster::QueryParams;
use crate::cluster::keyring::Key;
use crate::cluster::query::{self, QueryUpdate};

pub(super) async fn keys(ctx: &ControlContext, body: KeysRequest) -> Result<Reply, ApiError> {
    let (name, payload) = match (body.op, body.key) {
        (KeyOp::List, _) => (query::KEYS_LIST, Vec::new()),
        (op, Some(key)) => {
            // Checked here too, so a typo fails at once rather than on every node.
            Key::parse(&key).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
            let name = match op {
                KeyOp::Install => query::KEYS_INSTALL,
                KeyOp::Use => query::KEYS_USE,
                KeyOp::Remove => query::KEYS_REMOVE,
                KeyOp::List => unreachable!("matched above"),
            };
            (name, key.into_bytes())
        }
        (_, None) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "install, use and remove need a \"key\"",
            ));
        }
    };
    let mut updates = ctx
        .cluster
        .query(QueryParams {
            name: name.to_string(),
            payload,
            ack: true,
            ..QueryParams::default()
        })
        .await
        .map_err(cluster_error)?;
    let mut nodes = BTreeMap::new();
    while let Some(update) = updates.recv().await {
        match update {
            QueryUpdate::Answer { node, payload, .. } => {
                let outcome = match serde_json::from_slice::<Vec<String>>(&payload.0) {
                    Ok(keys) => NodeKeys {
                        ok: true,
                        keys,
                        error: None,
                    },
                    Err(e) => failed(format!("unreadable answer: {e}")),
                };
                nodes.insert(node, outcome);
            }
            QueryUpdate::NoAnswer { node, reason } => {
                nodes.insert(node, failed(reason));
            }
            QueryUpdate::Done { missing, .. } => {
                for node in missing {
                    nodes.insert(node, failed("no answer before the timeout".into()));
                }
                break;
            }
            QueryUpdate::Started { .. } | QueryUpdate::Ack { .. } => {}
        }
    }
    let failed_count = nodes.values().filter(|n| !n.ok).count();
    Ok(json(
        StatusCode::OK,
        &KeysResponse {
            nodes,
            failed: failed_count,
        },
    ))
}

fn failed(error: String) -> NodeKeys {
    NodeKeys {
        ok: false,
        keys: Vec::new(),
        error: Some(error),
    }
}
