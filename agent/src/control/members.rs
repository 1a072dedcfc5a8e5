//! The membership endpoints: `GET /v1/members`, `POST /v1/join`, `POST /v1/leave`,
//! `POST /v1/force-leave` and `POST /v1/tags` (this node's tags).

use hyper::StatusCode;

use super::api::{
    Empty, ForceLeaveRequest, JoinRequest, LeaveResponse, MembersQuery, MembersResponse,
    TagsRequest, TagsResponse,
};
use super::context::ControlContext;
use super::filter::MemberFilter;
use super::reply::{ApiError, Reply, cluster_error, error, json};
use crate::cluster::message::check_tag_value;

/// `GET /v1/members?status=&name=&tag=`: the members that match every filter.
pub(super) async fn members(ctx: &ControlContext, query: &str) -> Result<Reply, ApiError> {
    let bad = |e: String| error(StatusCode::BAD_REQUEST, e);
    let filter =
        MemberFilter::new(&MembersQuery::from_query_string(query).map_err(bad)?).map_err(bad)?;
    let mut members = ctx.cluster.members().await.map_err(cluster_error)?;
    members.retain(|m| filter.matches(m));
    Ok(json(StatusCode::OK, &MembersResponse { members }))
}

/// `POST /v1/join`: how many of the addresses answered, and why the others did not.
pub(super) async fn join(ctx: &ControlContext, body: JoinRequest) -> Result<Reply, ApiError> {
    if body.addrs.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "no addresses to join: \"addrs\" is empty",
        ));
    }
    let report = ctx.cluster.join(&body.addrs).await.map_err(cluster_error)?;
    Ok(json(StatusCode::OK, &report))
}

/// `POST /v1/leave`: answers once the graceful leave is complete.
pub(super) async fn leave(ctx: &ControlContext) -> Result<Reply, ApiError> {
    ctx.cluster.leave().await.map_err(cluster_error)?;
    Ok(json(StatusCode::OK, &LeaveResponse { left: true }))
}

/// `POST /v1/force-leave`.
pub(super) async fn force_leave(
    ctx: &ControlContext,
    body: ForceLeaveRequest,
) -> Result<Reply, ApiError> {
    ctx.cluster
        .force_leave(body.node, body.prune)
        .await
        .map_err(cluster_error)?;
    Ok(json(StatusCode::OK, &Empty {}))
}

/// `POST /v1/tags`: this node's tags after the change.
pub(super) async fn tags(ctx: &ControlContext, body: TagsRequest) -> Result<Reply, ApiError> {
    for (key, value) in &body.set {
        check_tag_value(key, value)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid tags: {e}")))?;
    }
    let tags = ctx
        .cluster
        .update_tags(body.set, body.delete)
        .await
        .map_err(cluster_error)?;
    Ok(json(StatusCode::OK, &TagsResponse { tags }))
}
