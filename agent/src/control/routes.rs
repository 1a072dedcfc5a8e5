//! The control API's endpoints: routing, JSON in and out, and the mapping of cluster errors
//! to HTTP statuses. Each endpoint is a small function from a request to a response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::api::{
    self, AgentSummary, Empty, ErrorBody, EventRequest, EventResponse, EventsResponse,
    ForceLeaveRequest, InfoResponse, JoinRequest, LeaveResponse, MAX_REQUEST_BYTES, MembersQuery,
    MembersResponse, MonitorLine, ReloadResponse, TagsRequest, TagsResponse,
};
use super::filter::MemberFilter;
use super::metrics;
use super::server::{Scope, State};
use crate::cluster::ClusterError;
use crate::logging::{self, LogRecv};

/// Response body: a whole JSON document, or the monitor's line stream.
pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) type Reply = Response<Body>;

/// A failed request: the status and the one-line message sent as `{"error": message}`.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    /// For 405: the method the path takes.
    allow: Option<&'static str>,
    /// For 401: ask for a bearer token.
    challenge: bool,
}

impl ApiError {
    fn into_response(self) -> Reply {
        let mut response = json(
            self.status,
            &ErrorBody {
                error: self.message,
            },
        );
        if let Some(allow) = self.allow {
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        if self.challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rumor\""),
            );
        }
        response
    }
}

/// How much of an oversized request body is read and discarded before answering 413.
const DRAIN_BYTES: usize = 1024 * 1024;

/// Answers one request. `peer` is the client's address on TCP, where the control API
/// requires the token before anything else; on a Unix socket (`None`) the file mode is the
/// access control and a token sent is ignored.
pub(super) async fn handle(
    state: &State,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if let (Scope::Api, Some(peer)) = (state.scope, peer)
        && let Err(failure) = state.ctx.auth.admit(
            peer,
            &format!("{method} {path}"),
            req.headers().get(AUTHORIZATION),
        )
    {
        let message = format!(
            "{}: send the agent's token as `Authorization: Bearer TOKEN` (rumor commands: \
             --control-token, RUMOR_CONTROL_TOKEN or --control-token-file)",
            failure.as_str()
        );
        return ApiError {
            challenge: true,
            ..error(StatusCode::UNAUTHORIZED, message)
        }
        .into_response();
    }
    let result = match state.scope {
        Scope::Api => route(state, req).await,
        Scope::Metrics => route_metrics(state, req).await,
    };
    let response = match result {
        Ok(response) => response,
        Err(e) => e.into_response(),
    };
    let status = response.status();
    if status.is_server_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), "control API request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), "control API request");
    }
    response
}

/// The `--metrics` listener: `GET /metrics` and nothing else.
async fn route_metrics(state: &State, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let path = req.uri().path();
    if path != "/metrics" {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (this listener serves only GET /metrics)"),
        ));
    }
    if req.method() != hyper::Method::GET {
        return Err(ApiError {
            allow: Some("GET"),
            ..error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}: use GET", req.method()),
            )
        });
    }
    metrics_page(state).await
}

/// `GET /metrics`: the Prometheus text exposition of the agent's counters.
async fn metrics_page(state: &State) -> Result<Reply, ApiError> {
    let cluster = state.ctx.cluster.info().await.map_err(cluster_error)?;
    let handlers = state.ctx.handlers.status();
    let text = metrics::render(&metrics::Snapshot {
        version: &state.ctx.agent.version,
        cluster: &cluster,
        handlers: &handlers,
        control_unauthorized: state.ctx.auth.refused(),
    });
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(response)
}

async fn route(state: &State, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let path = req.uri().path();
    let allowed = match path {
        "/v1/members" | "/v1/info" | "/v1/events" | "/v1/monitor" | "/metrics" => "GET",
        "/v1/join" | "/v1/leave" | "/v1/force-leave" | "/v1/event" | "/v1/tags" | "/v1/reload"
        | "/v1/query" | "/v1/reachability" | "/v1/keys" => "POST",
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path} (see docs/control-api.md)"),
            ));
        }
    };
    if req.method().as_str() != allowed {
        return Err(ApiError {
            allow: Some(allowed),
            ..error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {path}: use {allowed}", req.method()),
            )
        });
    }
    let ctx = &state.ctx;
    match path {
        "/v1/members" => members(state, req.uri().query().unwrap_or("")).await,
        "/v1/info" => info(state).await,
        "/v1/events" => {
            let events = ctx.cluster.recent_events().await.map_err(cluster_error)?;
            Ok(json(StatusCode::OK, &EventsResponse { events }))
        }
        "/v1/monitor" => monitor(state, req.uri().query().unwrap_or("")),
        "/v1/join" => {
            let body: JoinRequest = read_json(req).await?;
            if body.addrs.is_empty() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "no addresses to join: \"addrs\" is empty",
                ));
            }
            let report = ctx.cluster.join(&body.addrs).await.map_err(cluster_error)?;
            Ok(json(StatusCode::OK, &report))
        }
        "/v1/query" => super::query::query(state, read_json(req).await?).await,
        "/v1/reachability" => super::query::reachability(state, read_json(req).await?).await,
        "/v1/keys" => super::keys::keys(state, read_json(req).await?).await,
        "/v1/leave" => {
            ctx.cluster.leave().await.map_err(cluster_error)?;
            Ok(json(StatusCode::OK, &LeaveResponse { left: true }))
        }
        "/v1/force-leave" => {
            let body: ForceLeaveRequest = read_json(req).await?;
            ctx.cluster
                .force_leave(body.node, body.prune)
                .await
                .map_err(cluster_error)?;
            Ok(json(StatusCode::OK, &Empty {}))
        }
        "/v1/event" => {
            let body: EventRequest = read_json(req).await?;
            let ltime = ctx
                .cluster
                .send_event(body.name, body.payload.0, body.coalesce)
                .await
                .map_err(cluster_error)?;
            Ok(json(StatusCode::OK, &EventResponse { ltime }))
        }
        "/v1/tags" => {
            let body: TagsRequest = read_json(req).await?;
            let tags = ctx
                .cluster
                .update_tags(body.set, body.delete)
                .await
                .map_err(cluster_error)?;
            Ok(json(StatusCode::OK, &TagsResponse { tags }))
        }
        "/v1/reload" => reload(state).await,
        "/metrics" => metrics_page(state).await,
        _ => unreachable!("every routed path is handled"),
    }
}

async fn members(state: &State, query: &str) -> Result<Reply, ApiError> {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let filter =
        MemberFilter::new(&MembersQuery::from_query_string(query).map_err(bad)?).map_err(bad)?;
    let mut members = state.ctx.cluster.members().await.map_err(cluster_error)?;
    members.retain(|m| filter.matches(m));
    Ok(json(StatusCode::OK, &MembersResponse { members }))
}

async fn info(state: &State) -> Result<Reply, ApiError> {
    let cluster = state.ctx.cluster.info().await.map_err(cluster_error)?;
    let a = &state.ctx.agent;
    let agent = AgentSummary {
        version: a.version.clone(),
        pid: a.pid,
        uptime_s: a.started.elapsed().as_secs(),
        control: a.control.clone(),
        data_dir: a.data_dir.clone(),
    };
    let handlers = state.ctx.handlers.status();
    Ok(json(
        StatusCode::OK,
        &InfoResponse {
            agent,
            cluster,
            handlers,
        },
    ))
}

async fn reload(state: &State) -> Result<Reply, ApiError> {
    let stopping = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
    };
    let (tx, rx) = oneshot::channel();
    state.ctx.reload.send(tx).await.map_err(|_| stopping())?;
    match rx.await {
        Ok(Ok(message)) => Ok(json(
            StatusCode::OK,
            &ReloadResponse {
                reloaded: true,
                message,
            },
        )),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, e)),
        Err(_) => Err(stopping()),
    }
}

/// `GET /v1/monitor?level=L`: NDJSON log lines at `L` and cluster events until the client
/// goes away or the server shuts down. A slow client gets `lagged` lines instead of
/// holding anything up.
fn monitor(state: &State, query: &str) -> Result<Reply, ApiError> {
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
    let mut logs = state.ctx.logs.subscribe(level);
    let mut events = state.ctx.events.subscribe();
    let mut shutdown = state.shutdown.clone();
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

/// A streaming `application/x-ndjson` response fed by `rx`, one line per message.
pub(super) fn ndjson_response(rx: mpsc::Receiver<Bytes>) -> Reply {
    let mut response = Response::new(LineStream { rx }.boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// A response body fed line by line from a channel; each line goes out as its own chunk.
struct LineStream {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for LineStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads a JSON request body of at most [`MAX_REQUEST_BYTES`]; an empty body reads as `{}`.
/// An oversized body is still read (and discarded) up to [`DRAIN_BYTES`] so that the client
/// sees the 413 answer instead of a connection reset.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    let too_large = declared.is_some_and(|n| n > DRAIN_BYTES as u64);
    while !too_large && seen <= DRAIN_BYTES {
        match body.frame().await {
            None => break,
            Some(Err(e)) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                ));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen += data.len();
                    if seen <= MAX_REQUEST_BYTES {
                        bytes.extend_from_slice(&data);
                    }
                }
            }
        }
    }
    if too_large || seen > MAX_REQUEST_BYTES {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: the limit is {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid JSON request body: {e}"),
        )
    })
}

pub(super) fn cluster_error(e: ClusterError) -> ApiError {
    let status = match &e {
        ClusterError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        ClusterError::EventTooLarge { .. } | ClusterError::QueryTooLarge { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ClusterError::InvalidName { .. }
        | ClusterError::InvalidQuery(_)
        | ClusterError::InvalidTags(_)
        | ClusterError::MemberAlive(_) => StatusCode::BAD_REQUEST,
        ClusterError::UnknownMember(_) => StatusCode::NOT_FOUND,
        ClusterError::JoinFailed(_) => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        allow: None,
        challenge: false,
    }
}

pub(super) fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    let mut bytes = serde_json::to_vec(body).unwrap_or_else(|e| {
        format!(r#"{{"error":"cannot encode the response: {e}"}}"#).into_bytes()
    });
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
