//! The control API client the CLI uses: one typed method per endpoint, one connection per
//! request, and errors that say where it looked and what to do. On TCP it sends the control
//! token as `Authorization: Bearer TOKEN`; on a Unix socket it sends none.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::api::{
    CatalogResponse, PluginChangeResponse, PluginInfoResponse, PluginInstallRequest,
    PluginRemoveRequest, PluginSetRequest, PluginsResponse, percent_encode,
};
use super::api::{
    ChecksResponse, ErrorBody, EventRequest, EventResponse, EventsResponse, ForceLeaveRequest,
    InfoResponse, JoinReport, JoinRequest, KeysRequest, KeysResponse, LeaveResponse, MembersQuery,
    MembersResponse, Payload, QueryRequest, ReachabilityRequest, ReloadResponse, Tags, TagsRequest,
    TagsResponse,
};
use super::auth::{TokenError, TokenSource};
use super::endpoint::ControlEndpoint;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a control API call failed. The `Display` text is one line meant for the user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the endpoint.
    #[error("{}", unreachable_message(endpoint, cause))]
    Unreachable {
        endpoint: ControlEndpoint,
        cause: std::io::Error,
    },
    /// The agent answered with an error; `message` is its `error` text.
    #[error("{message}")]
    Api { status: u16, message: String },
    /// The agent refused the request (401): the token is wrong or missing.
    #[error(
        "the agent at {endpoint} refused the request: wrong or missing control token \
         (set --control-token or RUMOR_CONTROL_TOKEN)"
    )]
    Unauthorized { endpoint: ControlEndpoint },
    /// The token to send could not be read.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// The connection broke or the answer was not what the API promises.
    #[error("the rumor agent at {endpoint} {detail}")]
    Protocol {
        endpoint: ControlEndpoint,
        detail: String,
    },
}

fn unreachable_message(endpoint: &ControlEndpoint, cause: &std::io::Error) -> String {
    let elsewhere = "point at another agent with --control PATH|HOST:PORT or RUMOR_CONTROL.";
    if cause.kind() == std::io::ErrorKind::PermissionDenied {
        format!(
            "cannot reach the rumor agent at {endpoint}: {cause}. Run this as the agent's user \
             (or root), or {elsewhere}"
        )
    } else {
        format!(
            "cannot reach the rumor agent at {endpoint}: {cause}. Is `rumor agent` running? \
             Point at another agent with --control PATH|HOST:PORT or RUMOR_CONTROL."
        )
    }
}

/// A client for one agent's control API.
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: ControlEndpoint,
    token: Option<TokenSource>,
}

impl Client {
    pub fn new(endpoint: ControlEndpoint) -> Self {
        Client {
            endpoint,
            token: None,
        }
    }

    /// Sends this token with every request over TCP. A token file is read (and its mode
    /// checked) when a request is made, and only for a TCP endpoint.
    pub fn with_token(mut self, token: Option<TokenSource>) -> Self {
        self.token = token;
        self
    }

    pub fn endpoint(&self) -> &ControlEndpoint {
        &self.endpoint
    }

    /// `GET /v1/members`, filtered by the agent.
    pub async fn members(&self, query: &MembersQuery) -> Result<MembersResponse, ClientError> {
        let qs = query.to_query_string();
        let path = if qs.is_empty() {
            "/v1/members".to_string()
        } else {
            format!("/v1/members?{qs}")
        };
        self.get(&path).await
    }

    /// `POST /v1/join`.
    pub async fn join(&self, addrs: Vec<String>) -> Result<JoinReport, ClientError> {
        self.post("/v1/join", &JoinRequest { addrs }).await
    }

    /// `POST /v1/leave`: returns once the graceful leave is complete.
    pub async fn leave(&self) -> Result<LeaveResponse, ClientError> {
        self.post("/v1/leave", &serde_json::json!({})).await
    }

    /// `POST /v1/force-leave`.
    pub async fn force_leave(&self, node: String, prune: bool) -> Result<(), ClientError> {
        let _: serde_json::Value = self
            .post("/v1/force-leave", &ForceLeaveRequest { node, prune })
            .await?;
        Ok(())
    }

    /// `POST /v1/event`.
    pub async fn event(
        &self,
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
    ) -> Result<EventResponse, ClientError> {
        let body = EventRequest {
            name,
            payload: Payload(payload),
            coalesce,
        };
        self.post("/v1/event", &body).await
    }

    /// `POST /v1/tags`.
    pub async fn tags(&self, set: Tags, delete: Vec<String>) -> Result<TagsResponse, ClientError> {
        self.post("/v1/tags", &TagsRequest { set, delete }).await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<InfoResponse, ClientError> {
        self.get("/v1/info").await
    }

    /// `GET /v1/events`.
    pub async fn events(&self) -> Result<EventsResponse, ClientError> {
        self.get("/v1/events").await
    }

    /// `GET /v1/checks`.
    pub async fn checks(&self) -> Result<ChecksResponse, ClientError> {
        self.get("/v1/checks").await
    }

    /// `POST /v1/reload`.
    pub async fn reload(&self) -> Result<ReloadResponse, ClientError> {
        self.post("/v1/reload", &serde_json::json!({})).await
    }

    /// `GET /v1/plugins`.
    pub async fn plugins(&self) -> Result<PluginsResponse, ClientError> {
        self.get("/v1/plugins").await
    }

    /// `GET /v1/plugins/catalog`.
    pub async fn plugin_catalog(&self) -> Result<CatalogResponse, ClientError> {
        self.get("/v1/plugins/catalog").await
    }

    /// `GET /v1/plugin?name=NAME`.
    pub async fn plugin_info(&self, name: &str) -> Result<PluginInfoResponse, ClientError> {
        self.get(&format!("/v1/plugin?name={}", percent_encode(name)))
            .await
    }

    /// `POST /v1/plugin/install`.
    pub async fn plugin_install(
        &self,
        request: &PluginInstallRequest,
    ) -> Result<PluginChangeResponse, ClientError> {
        self.post("/v1/plugin/install", request).await
    }

    /// `POST /v1/plugin/set`.
    pub async fn plugin_set(
        &self,
        request: &PluginSetRequest,
    ) -> Result<PluginChangeResponse, ClientError> {
        self.post("/v1/plugin/set", request).await
    }

    /// `POST /v1/plugin/remove`.
    pub async fn plugin_remove(&self, name: String) -> Result<PluginChangeResponse, ClientError> {
        self.post("/v1/plugin/remove", &PluginRemoveRequest { name })
            .await
    }

    /// `GET /v1/monitor?level=L`: a stream of NDJSON lines.
    pub async fn monitor(&self, level: tracing::Level) -> Result<LineStream, ClientError> {
        let level = level.as_str().to_ascii_lowercase();
        self.stream(Method::GET, &format!("/v1/monitor?level={level}"), None)
            .await
    }

    /// `POST /v1/query`: acks and answers as NDJSON lines, ending with `done`.
    pub async fn query(&self, request: &QueryRequest) -> Result<LineStream, ClientError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| self.protocol(format!("request could not be encoded: {e}")))?;
        self.stream(Method::POST, "/v1/query", Some(body)).await
    }

    /// `POST /v1/keys`: a keyring change (or listing) on every member.
    pub async fn keys(&self, request: &KeysRequest) -> Result<KeysResponse, ClientError> {
        self.post("/v1/keys", request).await
    }

    /// `POST /v1/reachability`: like a query, answered by every node without handlers.
    pub async fn reachability(
        &self,
        request: &ReachabilityRequest,
    ) -> Result<LineStream, ClientError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| self.protocol(format!("request could not be encoded: {e}")))?;
        self.stream(Method::POST, "/v1/reachability", Some(body))
            .await
    }

    async fn stream(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<LineStream, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = self.read_body(response.into_body()).await?;
            return Err(api_error(status, &bytes));
        }
        Ok(LineStream {
            endpoint: self.endpoint.clone(),
            body: response.into_body(),
            buf: Vec::new(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| self.protocol(format!("request could not be encoded: {e}")))?;
        self.call(Method::POST, path, Some(bytes)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body).await?;
        let status = response.status();
        let bytes = self.read_body(response.into_body()).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            self.protocol(format!(
                "sent an answer this client does not understand: {e}"
            ))
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let authorization = match (&self.endpoint, &self.token) {
            (ControlEndpoint::Tcp(_), Some(source)) => Some(format!("Bearer {}", source.read()?)),
            _ => None,
        };
        let mut sender = self.connect().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost");
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| self.protocol(format!("request could not be built: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(format!("closed the connection before answering: {e}")))?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized {
                endpoint: self.endpoint.clone(),
            });
        }
        Ok(response)
    }

    async fn read_body(&self, body: Incoming) -> Result<Bytes, ClientError> {
        body.collect()
            .await
            .map(|collected| collected.to_bytes())
            .map_err(|e| self.protocol(format!("closed the connection mid-answer: {e}")))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let unreachable = |cause| ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            cause,
        };
        match &self.endpoint {
            ControlEndpoint::Unix(path) => {
                let io = UnixStream::connect(path).await.map_err(unreachable)?;
                self.handshake(io).await
            }
            ControlEndpoint::Tcp(addr) => {
                let io = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
                    .map_err(unreachable)?;
                self.handshake(io).await
            }
        }
    }

    async fn handshake<IO>(&self, io: IO) -> Result<SendRequest<Full<Bytes>>, ClientError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.protocol(format!("did not speak HTTP: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn protocol(&self, detail: String) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }
}

/// Turns an error response into [`ClientError::Api`] with the server's `error` text.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("the agent answered {status}")
            } else {
                format!(
                    "the agent answered {status}: {}",
                    text.chars().take(200).collect::<String>()
                )
            }
        });
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

/// A streamed answer (monitor, query): one JSON document per line.
pub struct LineStream {
    endpoint: ControlEndpoint,
    body: Incoming,
    buf: Vec<u8>,
}

impl LineStream {
    /// The next line (without its newline), or `None` once the agent ends the stream.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            match self.body.frame().await {
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    let rest = std::mem::take(&mut self.buf);
                    return Ok(Some(String::from_utf8_lossy(&rest).into_owned()));
                }
                Some(Err(e)) => {
                    return Err(ClientError::Protocol {
                        endpoint: self.endpoint.clone(),
                        detail: format!("broke off the stream: {e}"),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
