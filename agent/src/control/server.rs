//! The control API server: binds the endpoint, accepts connections, serves HTTP/1.1 on each,
//! and shuts down gracefully. Each request goes to `routes.rs`, which picks its endpoint.
//!
//! TCP control needs a token ([`ControlAuth`]): [`serve`] refuses to listen on TCP without
//! one, and every TCP request must carry it. [`serve_metrics`] runs the separate, token-less
//! listener that answers only `GET /metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::auth::ControlAuth;
use super::context::{ControlContext, Scope, Served};
use super::endpoint::ControlEndpoint;
use super::limits::{Activity, Admit, ListenerConnections};
use super::routes;
use crate::descriptors;
use crate::log_limit::LogLimiter;

/// How long [`ControlServer::shutdown`] lets in-flight requests finish.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
    #[error(
        "another agent is already serving the control API on {0}: give this agent its own \
         with --control or --data-dir (note that RUMOR_CONTROL, which the client commands \
         read, sets the agent's endpoint too: unset it in the shell that starts agents)"
    )]
    InUse(ControlEndpoint),
}

/// Checks that `endpoint` can be served with `auth`: TCP needs a token, and no other agent may
/// serve it already. The agent calls this before it joins anything, so either mistake fails
/// the start at once.
pub fn check_endpoint(endpoint: &ControlEndpoint, auth: &ControlAuth) -> Result<(), ServeError> {
    match endpoint {
        ControlEndpoint::Tcp(addr) if !auth.has_token() => Err(ServeError::TokenRequired(*addr)),
        _ if is_served(endpoint) => Err(ServeError::InUse(endpoint.clone())),
        _ => Ok(()),
    }
}

/// Whether something answers on `endpoint` now. Checked before the agent joins anything, so
/// a second agent started on the first one's endpoint fails before it is a member (and
/// before it is left listed as failed); binding checks again, for a race.
fn is_served(endpoint: &ControlEndpoint) -> bool {
    match endpoint {
        ControlEndpoint::Unix(path) => {
            std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
                && std::os::unix::net::UnixStream::connect(path)
                    .is_ok_and(|stream| listener_alive(&stream))
        }
        ControlEndpoint::Tcp(addr) if addr.port() != 0 => {
            std::net::TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok()
        }
        ControlEndpoint::Tcp(_) => false,
    }
}

/// Whether the process that listens on the other end of `stream` still runs. A connect can
/// succeed after the agent that listened was killed: a handler it was starting at that instant
/// holds a copy of the listening socket until its exec closes it. The listener's credentials
/// name the agent that called listen(), so a dead one means a stale socket, not another agent.
fn listener_alive(stream: &std::os::unix::net::UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a `ucred` of that size, for a
    // socket we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 || cred.pid <= 0 {
        // Cannot tell: take it as served, the safe side.
        return true;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let exists = unsafe { libc::kill(cred.pid, 0) } == 0;
    exists || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
    let served = Arc::new(Served {
        ctx,
        scope,
        shutdown: shutdown_rx.clone(),
    });
    let task = tokio::spawn(accept_loop(listener, served, shutdown_rx));
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

/// Accepts connections until shutdown, within the listener's limits (`limits.rs`).
async fn accept_loop(listener: Listener, served: Arc<Served>, mut shutdown: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let mut limit = ListenerConnections::new(served.ctx.limits.clone(), served.scope);
    let mut accept_log = LogLimiter::default();
    let mut refused_log = LogLimiter::default();
    let mut evicted_log = LogLimiter::default();
    let what = served.scope.listener_name();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = accept(&listener) => accepted,
        };
        let (io, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                if let Some(suppressed) = accept_log.allow() {
                    tracing::warn!(suppressed, "{what}: cannot accept a connection: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let refused = match limit.admit(descriptors::free()) {
            Admit::Serve => None,
            Admit::ServeEvicting => {
                if let Some(suppressed) = evicted_log.allow() {
                    tracing::warn!(
                        suppressed,
                        "{what}: {} connections open (max_control_connections); closed the one idle the longest for a new one",
                        served.ctx.limits.max_connections()
                    );
                }
                None
            }
            Admit::RefuseFull => Some(format!(
                "all {} connections are busy (max_control_connections)",
                served.ctx.limits.max_connections()
            )),
            Admit::RefuseDescriptors(free) => Some(format!(
                "only {free} file descriptors are free, and {} are kept for handlers",
                descriptors::RESERVE
            )),
        };
        if let Some(why) = refused {
            // Dropping the connection closes it.
            if let Some(suppressed) = refused_log.allow() {
                tracing::warn!(suppressed, "{what}: refused a connection: {why}");
            }
            continue;
        }
        let activity = Activity::new();
        let task = match io {
            Conn::Unix(io) => conns.spawn(serve_connection(
                io,
                None,
                activity.clone(),
                served.clone(),
                shutdown.clone(),
            )),
            Conn::Tcp(io) => conns.spawn(serve_connection(
                io,
                peer,
                activity.clone(),
                served.clone(),
                shutdown.clone(),
            )),
        };
        limit.serving(&activity, task);
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
    Tcp(tokio::net::TcpStream),
}

/// A connection and, on TCP, the client's address.
async fn accept(listener: &Listener) -> std::io::Result<(Conn, Option<SocketAddr>)> {
    match listener {
        Listener::Unix(l) => l.accept().await.map(|(io, _)| (Conn::Unix(io), None)),
        Listener::Tcp(l) => l
            .accept()
            .await
            .map(|(io, peer)| (Conn::Tcp(io), Some(peer))),
    }
}

/// Serves one connection; `peer` is the client's address on TCP (`None`: a Unix socket).
/// `activity` tells the listener whether a request is in progress (until its response body
/// is sent), so that it never closes a busy connection for room.
async fn serve_connection<IO>(
    io: IO,
    peer: Option<SocketAddr>,
    activity: Arc<Activity>,
    served: Arc<Served>,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let served = served.clone();
        let in_flight = activity.begin();
        async move {
            let response = routes::handle(&served, peer, req).await;
            Ok::<_, Infallible>(response.map(|body| in_flight.keep_with(body)))
        }
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

#[cfg(test)]
mod stale_socket_tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_socket_held_after_its_agent_died_is_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let endpoint = ControlEndpoint::Unix(path.clone());
        // Our own listener: served.
        let ours = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(is_served(&endpoint));
        drop(ours);
        std::fs::remove_file(&path).unwrap();
        // A process listens, hands the socket to a child, and exits: what a handler being
        // started when its agent is killed does. The socket still accepts connections.
        let Ok(mut parent) = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import os, socket, sys, time\n\
                 s = socket.socket(socket.AF_UNIX); s.bind({:?}); s.listen(4)\n\
                 if os.fork() == 0:\n    time.sleep(30); sys.exit(0)\n\
                 print('ready', flush=True)\n",
                path.display().to_string()
            ))
            .stdout(Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIPPED: python3 is missing");
            return;
        };
        assert!(parent.wait().unwrap().success());
        assert!(
            std::os::unix::net::UnixStream::connect(&path).is_ok(),
            "the child holds the listener"
        );
        assert!(!is_served(&endpoint), "its listener's process is gone");
        // The child sleeps on; end it.
        let _ = Command::new("pkill")
            .args(["-f", &path.display().to_string()])
            .status();
    }
}
