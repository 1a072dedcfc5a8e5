//! Routing: which endpoint answers a request. The token check on TCP, the method each path
//! takes, and reading the JSON request body happen here; the endpoints themselves are in
//! `members.rs`, `events.rs`, `query.rs`, `keys.rs`, `plugins.rs` and `info.rs`
//! (`GET /v1/checks` is one line, here).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;

use super::api::ChecksResponse;
use super::api::MAX_REQUEST_BYTES;
use super::context::{Scope, Served};
use super::reply::{ApiError, Reply, error, json};
use super::{events, info, keys, members, plugins, query};

/// How much of an oversized request body is read and discarded before answering 413.
const DRAIN_BYTES: usize = 1024 * 1024;
/// How long a client may take to send a request's body once its headers are in (the headers
/// have their own timeout, in `server.rs`): a client that trickles it must not hold a
/// connection forever.
pub(super) const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one request. `peer` is the client's address on TCP, where the control API
/// requires the token before anything else; on a Unix socket (`None`) the file mode is the
/// access control and a token sent is ignored.
pub(super) async fn handle(
    served: &Served,
    peer: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if let (Scope::Api, Some(peer)) = (served.scope, peer)
        && let Err(failure) = served.ctx.auth.admit(
            peer,
            &format!("{method} {path}"),
            req.headers().get(AUTHORIZATION),
        )
    {
        return ApiError::unauthorized(format!(
            "{}: send the agent's token as `Authorization: Bearer TOKEN` (rumor commands: \
             --control-token, RUMOR_CONTROL_TOKEN or --control-token-file)",
            failure.as_str()
        ))
        .into_response();
    }
    let result = match served.scope {
        Scope::Api => route(served, req).await,
        Scope::Metrics => route_metrics(served, req).await,
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
async fn route_metrics(served: &Served, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let path = req.uri().path();
    if path != "/metrics" {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path} (this listener serves only GET /metrics)"),
        ));
    }
    if req.method() != hyper::Method::GET {
        return Err(ApiError::method_not_allowed(
            "GET",
            format!("{} is not allowed on {path}: use GET", req.method()),
        ));
    }
    info::metrics_page(&served.ctx).await
}

async fn route(served: &Served, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let path = req.uri().path();
    let allowed = match path {
        "/v1/members" | "/v1/info" | "/v1/events" | "/v1/monitor" | "/v1/checks" | "/metrics" => {
            "GET"
        }
        "/v1/plugins" | "/v1/plugins/catalog" | "/v1/plugin" => "GET",
        "/v1/join" | "/v1/leave" | "/v1/force-leave" | "/v1/event" | "/v1/tags" | "/v1/reload"
        | "/v1/query" | "/v1/reachability" | "/v1/keys" => "POST",
        "/v1/plugin/install" | "/v1/plugin/set" | "/v1/plugin/remove" => "POST",
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path} (see docs/control-api.md)"),
            ));
        }
    };
    if req.method().as_str() != allowed {
        return Err(ApiError::method_not_allowed(
            allowed,
            format!("{} is not allowed on {path}: use {allowed}", req.method()),
        ));
    }
    let ctx = &served.ctx;
    let query_string = req.uri().query().unwrap_or("");
    match path {
        "/v1/members" => members::members(ctx, query_string).await,
        "/v1/info" => info::info(ctx).await,
        "/v1/events" => events::recent(ctx).await,
        "/v1/checks" => Ok(json(
            StatusCode::OK,
            &ChecksResponse {
                checks: ctx.checks(),
            },
        )),
        "/v1/monitor" => events::monitor(ctx, served.shutdown.clone(), query_string),
        "/v1/join" => members::join(ctx, read_json(req).await?).await,
        "/v1/query" => query::query(ctx, read_json(req).await?).await,
        "/v1/reachability" => query::reachability(ctx, read_json(req).await?).await,
        "/v1/keys" => keys::keys(ctx, read_json(req).await?).await,
        "/v1/leave" => members::leave(ctx).await,
        "/v1/force-leave" => members::force_leave(ctx, read_json(req).await?).await,
        "/v1/event" => events::send(ctx, read_json(req).await?).await,
        "/v1/tags" => members::tags(ctx, read_json(req).await?).await,
        "/v1/reload" => info::reload(ctx).await,
        "/metrics" => info::metrics_page(ctx).await,
        "/v1/plugins" => plugins::list(ctx),
        "/v1/plugins/catalog" => plugins::available(ctx),
        "/v1/plugin" => plugins::info(ctx, query_string),
        "/v1/plugin/install" => plugins::install(ctx, read_json(req).await?).await,
        "/v1/plugin/set" => plugins::set(ctx, read_json(req).await?).await,
        "/v1/plugin/remove" => plugins::remove(ctx, read_json(req).await?).await,
        _ => unreachable!("every routed path is handled"),
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
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    while !too_large && seen <= DRAIN_BYTES {
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {BODY_TIMEOUT:?}"),
            ));
        };
        match frame {
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
