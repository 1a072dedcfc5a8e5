//! The query endpoints: `POST /v1/query` and `POST /v1/reachability`. Both answer with a
//! stream of NDJSON [`QueryUpdate`]s — the expected nodes, acks and answers as they arrive, then
//! `done` — so a client can print progress and return the moment the last answer is in.

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::mpsc;

use super::api::{QueryRequest, ReachabilityRequest};
use super::context::ControlContext;
use super::reply::{ApiError, Reply, cluster_error, error, ndjson_response};
use crate::cluster::QueryParams;
use crate::cluster::query::{self, QueryFilter, QueryUpdate};

/// `POST /v1/query` (public: rumor's internal query names are refused).
pub(super) async fn query(ctx: &ControlContext, body: QueryRequest) -> Result<Reply, ApiError> {
    if body.name.starts_with(query::INTERNAL_PREFIX) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "query names starting with {:?} are reserved for rumor's own queries",
                query::INTERNAL_PREFIX
            ),
        ));
    }
    let params = QueryParams {
        name: body.name,
        payload: body.payload.0,
        filter: QueryFilter {
            nodes: body.nodes,
            tags: body.tags.into_iter().collect(),
        },
        timeout: body.timeout_ms.map(Duration::from_millis),
        ack: body.ack,
    };
    stream(ctx, params).await
}

/// `POST /v1/reachability`: the built-in ping every node answers without a handler.
pub(super) async fn reachability(
    ctx: &ControlContext,
    body: ReachabilityRequest,
) -> Result<Reply, ApiError> {
    let params = QueryParams {
        name: query::PING.to_string(),
        timeout: body.timeout_ms.map(Duration::from_millis),
        ack: true,
        ..QueryParams::default()
    };
    stream(ctx, params).await
}

async fn stream(ctx: &ControlContext, params: QueryParams) -> Result<Reply, ApiError> {
    let mut updates = ctx.cluster.query(params).await.map_err(cluster_error)?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            let done = matches!(update, QueryUpdate::Done { .. });
            let mut line = serde_json::to_vec(&update).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() || done {
                break; // the client went away, or the query is over
            }
        }
    });
    Ok(ndjson_response(rx))
}
