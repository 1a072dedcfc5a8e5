//! The event endpoints: `POST /v1/event` (send a user event), `GET /v1/events` (the recent
//! ones) and `GET /v1/monitor` (logs and cluster events as they happen).

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::{broadcast, mpsc, watch};

use super::api::{self, EventRequest, EventResponse, EventsResponse, MonitorLine};
use super::context::ControlContext;
use super::reply::{ApiError, Reply, cluster_error, error, json, ndjson_response};
use crate::logging::{self, LogRecv};

/// `POST /v1/event`: the event's Lamport time.
pub(super) async fn send(ctx: &ControlContext, body: EventRequest) -> Result<Reply, ApiError> {
    let ltime = ctx
        .cluster
        .send_event(body.name, body.payload.0, body.coalesce)
        .await
        .map_err(cluster_error)?;
    Ok(json(StatusCode::OK, &EventResponse { ltime }))
}

/// `GET /v1/events`: the user events still in the deduplication window.
pub(super) async fn recent(ctx: &ControlContext) -> Result<Reply, ApiError> {
    let events = ctx.cluster.recent_events().await.map_err(cluster_error)?;
    Ok(json(StatusCode::OK, &EventsResponse { events }))
}

/// `GET /v1/monitor?level=L`: NDJSON log lines at `L` and cluster events until the client
/// goes away or the server shuts down. A slow client gets `lagged` lines instead of
/// holding anything up.
pub(super) fn monitor(
    ctx: &ControlContext,
    mut shutdown: watch::Receiver<bool>,
    query: &str,
) -> Result<Reply, ApiError> {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let mut level = tracing::Level::INFO;
    for (key, value) in api::parse_query(query).map_err(bad)? {
        match key.as_str() {
            "level" => level = logging::parse_level(&value).map_err(bad)?,
            other => {
                return Err(bad(format!(
                    "unknown query parameter {other:?}: expected level"
                )));
            }
        }
    }
    let mut logs = ctx.logs.subscribe(level);
    let mut events = ctx.events.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if *shutdown.borrow_and_update() {
            return;
        }
        loop {
            let line = tokio::select! {
                _ = tx.closed() => break,
                _ = shutdown.changed() => break,
                log = logs.recv() => match log {
                    LogRecv::Line(line) => MonitorLine::Log((*line).clone()),
                    LogRecv::Lagged(missed) => MonitorLine::Lagged { missed },
                    LogRecv::Closed => break,
                },
                event = events.recv() => match event {
                    Ok(event) => MonitorLine::Event { event },
                    Err(broadcast::error::RecvError::Lagged(missed)) => MonitorLine::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            tokio::select! {
                sent = tx.send(Bytes::from(bytes)) => if sent.is_err() { break },
                _ = shutdown.changed() => break,
            }
        }
    });
    Ok(ndjson_response(rx))
}
