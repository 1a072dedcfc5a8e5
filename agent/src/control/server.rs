//! The control API server: binds the endpoint, accepts connections, serves HTTP/1.1 on each,
//! and shuts down gracefully. Routing and the endpoints themselves are in `routes.rs`.
//!
//! TCP control needs a token ([`ControlAuth`]): [`serve`] refuses to listen on TCP without
//! one, and every TCP request must carry it. [`serve_metrics`] runs the separate, token-less
//! listener that answers only `GET /metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rumor_handlers::event::Event;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::auth::ControlAuth;
use super::endpoint::ControlEndpoint;
use super::routes;
use crate::cluster::ClusterHandle;
use crate::logging::LogHub;

/// How long [`ControlServer::shutdown`] lets in-flight requests finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A reload request: the agent answers with a message on success or an error text.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// Everything the control API needs from the running agent.
#[derive(Clone)]
pub struct ControlContext {
    pub cluster: ClusterHandle,
    /// The cluster's event stream, for `GET /v1/monitor`.
    pub events: broadcast::Sender<Event>,
    pub logs: LogHub,
    /// `POST /v1/reload` sends a reply channel here and waits for the agent's answer.
    pub reload: mpsc::Sender<ReloadRequest>,
    pub agent: AgentInfo,
    /// The handler dispatcher, for its status in `GET /v1/info`.
    pub handlers: rumor_handlers::Dispatcher,
    /// The token TCP requests must carry (a Unix socket needs none).
    pub auth: ControlAuth,
}

/// The agent process, as `GET /v1/info` reports it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub started: Instant,
    /// Where the control API is served (as shown to users).
    pub control: String,
    pub data_dir: PathBuf,
}

/// What request handlers share.
pub(super) struct State {
    pub ctx: ControlContext,
    /// Becomes `true` when the server shuts down; long-lived responses (monitor) end then.
    pub shutdown: watch::Receiver<bool>,
    pub scope: Scope,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The whole control API (token required on TCP).
    Api,
    /// `GET /metrics` only, without a token (`--metrics ADDR`).
    Metrics,
}

/// Why the control API cannot be served as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServeError {
    #[error(
        "the control API on TCP ({0}) requires a token: set --control-token TOKEN, \
         RUMOR_CONTROL_TOKEN or --control-token-file PATH (control_token / control_token_file \
         in the config file), e.g. a value from `openssl rand -hex 32`; or serve it on a Unix \
         socket path instead"
    )]
    TokenRequired(SocketAddr),
}

/// Checks that `endpoint` can be served with `auth`: TCP needs a token. The agent calls this
/// before it joins anything, so a missing token fails the start at once.
pub fn check_endpoint(endpoint: &ControlEndpoint, auth: &ControlAuth) -> Result<(), ServeError> {
    match endpoint {
        ControlEndpoint::Tcp(addr) if !auth.has_token() => Err(ServeError::TokenRequired(*addr)),
        _ => Ok(()),
    }
}

/// A running control API server. Dropping it stops accepting connections at once; call
/// [`ControlServer::shutdown`] to also drain requests and remove the socket file.
pub struct ControlServer {
    endpoint: ControlEndpoint,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// The socket file we created, with its device and inode, so we only remove our own.
    socket: Option<(PathBuf, u64, u64)>,
}

impl ControlServer {
    /// Where the server listens (for TCP, the bound address, so port 0 shows the real port).
    pub fn endpoint(&self) -> &ControlEndpoint {
        &self.endpoint
    }

    /// Stops accepting, lets in-flight requests finish (at most ~2 s; monitor streams end at
    /// once), and removes the socket file.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        if let Some((path, dev, ino)) = self.socket {
            let ours =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            if ours && let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove the control socket {}: {e}", path.display());
            }
        }
    }
}

/// Binds `endpoint` and serves the control API on it in a background task.
pub async fn serve(
    endpoint: &ControlEndpoint,
    ctx: ControlContext,
) -> anyhow::Result<ControlServer> {
    let (listener, bound, socket) = match endpoint {
        ControlEndpoint::Unix(path) => {
            let listener = bind_unix(path).await?;
            let meta = std::fs::symlink_metadata(path)
                .with_context(|| format!("cannot inspect the control socket {}", path.display()))?;
            (
                Listener::Unix(listener),
                endpoint.clone(),
                Some((path.clone(), meta.dev(), meta.ino())),
            )
        }
        ControlEndpoint::Tcp(addr) => {
            check_endpoint(endpoint, &ctx.auth)?;
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for the control API on {addr}"))?;
            let local = listener.local_addr()?;
            (Listener::Tcp(listener), ControlEndpoint::Tcp(local), None)
        }
    };
    tracing::info!("control API listening on {bound}");
    Ok(start(listener, bound, socket, ctx, Scope::Api))
}

/// Serves `GET /metrics` alone on `addr`, without a token (`--metrics ADDR`): it exposes
/// counters and member counts only, never names, events or commands.
pub async fn serve_metrics(addr: SocketAddr, ctx: ControlContext) -> anyhow::Result<ControlServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = ControlEndpoint::Tcp(listener.local_addr()?);
    tracing::info!("metrics listening on http://{bound}/metrics");
    Ok(start(
        Listener::Tcp(listener),
        bound,
        None,
        ctx,
        Scope::Metrics,
    ))
}

fn start(
    listener: Listener,
    endpoint: ControlEndpoint,
    socket: Option<(PathBuf, u64, u64)>,
    ctx: ControlContext,
    scope: Scope,
) -> ControlServer {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = Arc::new(State {
        ctx,
        shutdown: shutdown_rx.clone(),
        scope,
    });
    let task = tokio::spawn(accept_loop(listener, state, shutdown_rx));
    ControlServer {
        endpoint,
        shutdown: shutdown_tx,
        task,
        socket,
    }
}

/// Creates the socket's directory (0700) if missing, clears a stale socket file, refuses to
/// take over a live one, binds, and restricts the socket to its owner (0600).
async fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    let shown = path.display();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| {
                format!(
                    "cannot create the directory {} for the control socket",
                    parent.display()
                )
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            bail!("{shown} exists and is not a socket: remove it or choose another control path")
        }
        Ok(_) => {
            match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
                Ok(Ok(_)) | Err(_) => {
                    bail!("another agent is already serving the control API on {shown}")
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::debug!("removing stale control socket {shown}");
                    std::fs::remove_file(path).with_context(|| {
                        format!("cannot remove the stale control socket {shown}")
                    })?;
                }
                Ok(Err(e)) => {
                    bail!("cannot check whether the control socket {shown} is in use: {e}")
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot inspect the control socket path {shown}: {e}"),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen for the control API on {shown}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict the control socket {shown} to its owner"))?;
    Ok(listener)
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

async fn accept_loop(listener: Listener, state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Conn::Unix(io)) => {
                conns.spawn(serve_connection(io, None, state.clone(), shutdown.clone()));
            }
            Ok(Conn::Tcp(io, peer)) => {
                conns.spawn(serve_connection(
                    io,
                    Some(peer),
                    state.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!("control API: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::debug!(
            "control API: {} connections still busy after {DRAIN_TIMEOUT:?}, closing them",
            conns.len()
        );
        conns.abort_all();
    }
}

enum Conn {
    Unix(UnixStream),
    Tcp(tokio::net::TcpStream, SocketAddr),
}

async fn accept(listener: &Listener) -> std::io::Result<Conn> {
    match listener {
        Listener::Unix(l) => l.accept().await.map(|(io, _)| Conn::Unix(io)),
        Listener::Tcp(l) => l.accept().await.map(|(io, peer)| Conn::Tcp(io, peer)),
    }
}

/// Serves one connection; `peer` is the client's address on TCP (`None`: a Unix socket).
async fn serve_connection<IO>(
    io: IO,
    peer: Option<SocketAddr>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(routes::handle(&state, peer, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("control API connection ended with an error: {e}");
    }
}
