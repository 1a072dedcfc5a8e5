//! How endpoints answer: a JSON document, an NDJSON stream, or an [`ApiError`] sent as
//! `{"error": message}` with its status; and which status each cluster error gets.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::mpsc;

use super::api::ErrorBody;
use crate::cluster::ClusterError;

/// Response body: a whole JSON document, or a stream of lines.
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
    /// 405, naming the one method the path takes.
    pub fn method_not_allowed(allow: &'static str, message: String) -> Self {
        ApiError {
            allow: Some(allow),
            ..error(StatusCode::METHOD_NOT_ALLOWED, message)
        }
    }

    /// 401, asking for a bearer token.
    pub fn unauthorized(message: String) -> Self {
        ApiError {
            challenge: true,
            ..error(StatusCode::UNAUTHORIZED, message)
        }
    }

    pub fn into_response(self) -> Reply {
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

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        allow: None,
        challenge: false,
    }
}

/// The status a failed cluster command answers with.
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

/// `body` as one JSON document and a newline.
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
