//! The endpoints about the agent itself: `GET /v1/info`, `GET /metrics` and `POST /v1/reload`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::sync::oneshot;

use super::api::{AgentSummary, ConnectionsSummary, InfoResponse, ReloadResponse};
use super::context::ControlContext;
use super::metrics;
use super::reply::{ApiError, Reply, cluster_error, error, json};

/// `GET /v1/info`: the agent process, the cluster as this node sees it, and the handlers.
pub(super) async fn info(ctx: &ControlContext) -> Result<Reply, ApiError> {
    let cluster = ctx.cluster.info().await.map_err(cluster_error)?;
    let a = &ctx.agent;
    let agent = AgentSummary {
        version: a.version.clone(),
        pid: a.pid,
        uptime_s: a.started.elapsed().as_secs(),
        control: a.control.clone(),
        data_dir: a.data_dir.clone(),
        encrypted: ctx.cluster.encrypted(),
    };
    let handlers = ctx.handlers.status();
    Ok(json(
        StatusCode::OK,
        &InfoResponse {
            agent,
            cluster,
            handlers,
            connections: connections(ctx),
            plugins: ctx.plugins.status(),
            reload: ctx.reload_status(),
        },
    ))
}

fn connections(ctx: &ControlContext) -> ConnectionsSummary {
    ConnectionsSummary {
        push_pull: ctx.cluster.push_pull.connection_counts(),
        control: ctx.limits.counts(),
    }
}

/// `GET /metrics`: the Prometheus text exposition of the agent's counters.
pub(super) async fn metrics_page(ctx: &ControlContext) -> Result<Reply, ApiError> {
    let cluster = ctx.cluster.info().await.map_err(cluster_error)?;
    let handlers = ctx.handlers.status();
    let text = metrics::render(&metrics::MetricInputs {
        version: &ctx.agent.version,
        cluster: &cluster,
        handlers: &handlers,
        control_unauthorized: ctx.auth.refused(),
        connections: &connections(ctx),
        plugins: &ctx.plugins.status(),
        reload: &ctx.reload_status(),
        dns: ctx.dns.as_deref(),
        checks: &ctx.checks(),
    });
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    Ok(response)
}

/// `POST /v1/reload`: asks the agent to re-read its configuration and waits for its answer.
pub(super) async fn reload(ctx: &ControlContext) -> Result<Reply, ApiError> {
    let stopping = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        )
    };
    let (tx, rx) = oneshot::channel();
    ctx.reload.send(tx).await.map_err(|_| stopping())?;
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
