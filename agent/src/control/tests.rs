//! Round trips through a real server on a Unix socket, with a fake cluster behind the handle.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rumor_handlers::event::{Event, UserEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};

use super::api::MembersQuery;
use super::client::ClientError;
use super::server::ControlServer;
use super::*;
use crate::cluster::handle::Command;
use crate::cluster::{ClusterError, ClusterHandle, MemberView, Status};
use crate::logging::LogHub;

/// The largest event the fake cluster accepts (name + payload).
const FAKE_EVENT_LIMIT: usize = 16;

fn member(name: &str, status: Status, role: &str) -> MemberView {
    MemberView::with_defaults(name, [127, 0, 0, 1].into(), status, &[("role", role)])
}

/// A cluster handle answered by a task that knows two members and checks event sizes.
pub(crate) fn fake_cluster() -> ClusterHandle {
    let (commands, mut rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(command) = rx.recv().await {
            match command {
                Command::Members(reply) => {
                    let _ = reply.send(vec![
                        member("a", Status::Alive, "web"),
                        member("b", Status::Failed, "db"),
                    ]);
                }
                Command::SendEvent {
                    name,
                    payload,
                    reply,
                    ..
                } => {
                    let size = name.len() + payload.len();
                    let _ = reply.send(if size > FAKE_EVENT_LIMIT {
                        Err(ClusterError::EventTooLarge {
                            size,
                            limit: FAKE_EVENT_LIMIT,
                        })
                    } else {
                        Ok(7)
                    });
                }
                Command::ForceLeave { node, reply, .. } => {
                    let _ = reply.send(Err(ClusterError::UnknownMember(node)));
                }
                Command::UpdateTags {
                    mut set,
                    delete,
                    reply,
                } => {
                    for key in delete {
                        set.remove(&key);
                    }
                    let _ = reply.send(Ok(set));
                }
                Command::Leave(reply) => {
                    let _ = reply.send(());
                }
                // Dropping the reply channel reads as "the agent is shutting down".
                _ => {}
            }
        }
    });
    ClusterHandle::answered_by(commands)
}

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub socket: std::path::PathBuf,
    pub server: ControlServer,
    pub client: Client,
    pub events: broadcast::Sender<Event>,
}

/// A server on a Unix socket in a fresh temporary directory, backed by [`fake_cluster`].
pub(crate) async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // A missing parent directory is created.
    let socket = dir.path().join("state").join("control.sock");
    let endpoint = ControlEndpoint::Unix(socket.clone());
    let (events, _) = broadcast::channel(16);
    let (reload, mut reloads) = mpsc::channel::<ReloadRequest>(1);
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(reply) = reloads.recv().await {
            n += 1;
            let _ = reply.send(if n == 1 {
                Ok("configuration reloaded".into())
            } else {
                Err("rumor.toml: unknown key \"colour\"".into())
            });
        }
    });
    let ctx = ControlContext {
        cluster: fake_cluster(),
        events: events.clone(),
        logs: LogHub::new(),
        reload,
        agent: AgentInfo {
            version: "0.1.0".into(),
            pid: 42,
            started: Instant::now(),
            control: endpoint.to_string(),
            data_dir: dir.path().to_path_buf(),
        },
        handlers: no_handlers(),
        auth: ControlAuth::default(),
        limits: ConnectionLimits::default(),
        plugins: no_plugins(),
        reloads: Default::default(),
        dns: None,
        checks: Default::default(),
    };
    let server = serve(&endpoint, ctx).await.unwrap();
    Fixture {
        _dir: dir,
        socket,
        server,
        client: Client::new(endpoint),
        events,
    }
}

/// Sends a raw HTTP/1.1 request and returns the status code and body.
async fn raw(socket: &Path, request: &str) -> (u16, String) {
    let mut stream = UnixStream::connect(socket).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn round_trip_over_a_unix_socket() {
    let f = start().await;

    let mode = std::fs::metadata(&f.socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(f.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    // Members, unfiltered and filtered; JSON is {"members": [...]}.
    let all = f.client.members(&MembersQuery::default()).await.unwrap();
    assert_eq!(all.members.len(), 2);
    let json = serde_json::to_value(&all).unwrap();
    assert_eq!(json["members"][0]["name"], "a");
    assert_eq!(json["members"][1]["status"], "failed");
    assert_eq!(json["members"][0]["tags"]["role"], "web");
    let web = MembersQuery {
        tags: vec![("role".into(), "w.*".into())],
        ..Default::default()
    };
    let names: Vec<_> = f
        .client
        .members(&web)
        .await
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["a"]);
    let bad_regex = MembersQuery {
        name: Some("a(".into()),
        ..Default::default()
    };
    match f.client.members(&bad_regex).await.unwrap_err() {
        ClientError::Api { status, message } => {
            assert_eq!(status, 400);
            assert!(
                message.contains("invalid regex in name filter"),
                "{message}"
            );
        }
        other => panic!("expected an API error, got {other}"),
    }

    // Events: accepted, and too large -> 413 naming the limit.
    let sent = f
        .client
        .event("deploy".into(), b"v1".to_vec(), false)
        .await
        .unwrap();
    assert_eq!(sent.ltime, 7);
    match f
        .client
        .event("deploy".into(), vec![b'x'; 100], true)
        .await
        .unwrap_err()
    {
        ClientError::Api { status, message } => {
            assert_eq!(status, 413);
            assert!(message.contains("the limit is 16 bytes"), "{message}");
        }
        other => panic!("expected an API error, got {other}"),
    }

    // Cluster errors keep their message.
    let err = f
        .client
        .force_leave("ghost".into(), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
    assert_eq!(err.to_string(), "no member named \"ghost\"");
    let stopped = f.client.info().await.unwrap_err();
    assert!(
        matches!(stopped, ClientError::Api { status: 503, .. }),
        "{stopped}"
    );

    let tags = f
        .client
        .tags([("role".to_string(), "web".to_string())].into(), vec![])
        .await
        .unwrap();
    assert_eq!(tags.tags["role"], "web");
    let err = f.client.join(vec![]).await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 400, .. }), "{err}");
    assert!(f.client.leave().await.unwrap().left);

    // Reload: the agent's answer, success then failure.
    assert_eq!(
        f.client.reload().await.unwrap().message,
        "configuration reloaded"
    );
    let err = f.client.reload().await.unwrap_err();
    assert_eq!(err.to_string(), "rumor.toml: unknown key \"colour\"");

    // Raw HTTP: unknown path, wrong method, bad JSON, unknown field, oversized body.
    let (status, body) = raw(
        &f.socket,
        "GET /v2/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body.contains("\"error\":\"no such endpoint: /v2/nope"),
        "{body}"
    );
    let (status, body) = raw(
        &f.socket,
        "GET /v1/event HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    assert!(body.contains("use POST"), "{body}");
    let (status, body) = raw(&f.socket, &post("/v1/event", "{name: deploy}")).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("invalid JSON request body: key must be a string"),
        "{body}"
    );
    let (status, body) = raw(&f.socket, &post("/v1/event", r#"{"name":"d","colour":1}"#)).await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `colour`"), "{body}");
    let (status, body) = raw(&f.socket, &post("/v1/tags", &"x".repeat(70_000))).await;
    assert_eq!(status, 413);
    assert!(body.contains("limit is 65536 bytes"), "{body}");

    // Monitor: events arrive as NDJSON lines.
    let mut stream = f.client.monitor(tracing::Level::DEBUG).await.unwrap();
    let event = Event::User(UserEvent {
        ltime: 9,
        name: "deploy".into(),
        payload: b"v2".to_vec(),
        coalesce: true,
        origin: "a".into(),
    });
    // The server subscribes before answering, so this is not lost.
    f.events.send(event.clone()).unwrap();
    let line = tokio::time::timeout(Duration::from_secs(5), stream.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<api::MonitorLine>(&line).unwrap(),
        api::MonitorLine::Event { event }
    );

    // Shutdown ends the monitor stream promptly (not by waiting out the drain of busy
    // connections) and removes the socket.
    let started = Instant::now();
    f.server.shutdown().await;
    assert!(
        started.elapsed() < super::server::DRAIN_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stream.next_line().await.unwrap(), None);
    assert!(!f.socket.exists());
}

#[tokio::test]
async fn a_monitor_that_disconnects_unsubscribes_without_waiting_for_a_line() {
    let f = start().await;
    let stream = f.client.monitor(tracing::Level::INFO).await.unwrap();
    assert_eq!(f.events.receiver_count(), 1);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.events.receiver_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the monitor task outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.server.shutdown().await;
}

#[tokio::test]
async fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
    let f = start().await;
    let ctx = |cluster| ControlContext {
        cluster,
        events: broadcast::channel(1).0,
        logs: LogHub::new(),
        reload: mpsc::channel(1).0,
        agent: AgentInfo {
            version: "0.1.0".into(),
            pid: 1,
            started: Instant::now(),
            control: String::new(),
            data_dir: "/".into(),
        },
        handlers: no_handlers(),
        auth: ControlAuth::default(),
        limits: ConnectionLimits::default(),
        plugins: no_plugins(),
        reloads: Default::default(),
        dns: None,
        checks: Default::default(),
    };
    let endpoint = ControlEndpoint::Unix(f.socket.clone());
    let err = serve(&endpoint, ctx(fake_cluster())).await.err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "another agent is already serving the control API on {}",
            f.socket.display()
        )
    );

    // A socket file nobody listens on (a crashed agent's) is removed and replaced.
    let stale = f.socket.with_file_name("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let server = serve(&ControlEndpoint::Unix(stale.clone()), ctx(fake_cluster()))
        .await
        .unwrap();
    let client = Client::new(ControlEndpoint::Unix(stale.clone()));
    assert_eq!(
        client
            .members(&MembersQuery::default())
            .await
            .unwrap()
            .members
            .len(),
        2
    );
    server.shutdown().await;

    // A regular file is left alone.
    let file = f.socket.with_file_name("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let err = serve(&ControlEndpoint::Unix(file.clone()), ctx(fake_cluster()))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("exists and is not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    f.server.shutdown().await;
}

/// A context backed by `cluster`, with `auth` guarding TCP.
fn context(cluster: ClusterHandle, auth: ControlAuth) -> ControlContext {
    ControlContext {
        cluster,
        events: broadcast::channel(1).0,
        logs: LogHub::new(),
        reload: mpsc::channel(1).0,
        agent: AgentInfo {
            version: "0.1.0".into(),
            pid: 1,
            started: Instant::now(),
            control: String::new(),
            data_dir: "/".into(),
        },
        handlers: no_handlers(),
        auth,
        limits: ConnectionLimits::default(),
        plugins: no_plugins(),
        reloads: Default::default(),
        dns: None,
        checks: Default::default(),
    }
}

/// An empty plugin directory that no test writes to.
fn no_plugins() -> std::sync::Arc<crate::plugin::Plugins> {
    std::sync::Arc::new(crate::plugin::Plugins::new(
        crate::plugin::PluginDir::in_data_dir(std::path::Path::new("/nonexistent-rumor-test")),
        Vec::new(),
    ))
}

/// Sends a raw HTTP/1.1 request over TCP and returns the status code and the whole response.
async fn raw_tcp(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    (response[9..12].parse().unwrap(), response)
}

fn get(path: &str, authorization: Option<&str>) -> String {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n")
}

#[tokio::test]
async fn tcp_without_a_token_is_refused_at_start() {
    let endpoint: ControlEndpoint = "0.0.0.0:0".parse().unwrap();
    let err = serve(&endpoint, context(fake_cluster(), ControlAuth::default()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("requires a token"), "{err}");
    assert!(err.contains("--control-token"), "{err}");
    assert!(err.contains("RUMOR_CONTROL_TOKEN"), "{err}");
}

#[tokio::test]
async fn tcp_serves_only_requests_with_the_token_and_reports_its_port() {
    let token = ControlToken::new("t0ken").unwrap();
    let auth = ControlAuth::new(Some(token));
    let endpoint: ControlEndpoint = "127.0.0.1:0".parse().unwrap();
    let server = serve(&endpoint, context(fake_cluster(), auth.clone()))
        .await
        .unwrap();
    let ControlEndpoint::Tcp(addr) = server.endpoint().clone() else {
        panic!("expected tcp")
    };
    assert_ne!(addr.port(), 0);

    // The right token: served.
    let client =
        Client::new(server.endpoint().clone()).with_token(Some(TokenSource::Value("t0ken".into())));
    assert_eq!(
        client
            .members(&MembersQuery::default())
            .await
            .unwrap()
            .members
            .len(),
        2
    );
    assert_eq!(auth.refused(), 0);

    // No token, a wrong one: 401 with a JSON error and a bearer challenge, before routing
    // (an unknown path is a 401 too, not a 404).
    for (request, why) in [
        (get("/v1/members", None), "missing control token"),
        (
            get("/v1/members", Some("Bearer t0keN")),
            "wrong control token",
        ),
        (
            get("/v1/members", Some("Basic dDBrZW4=")),
            "missing control token",
        ),
        (get("/v2/nope", None), "missing control token"),
        (get("/metrics", None), "missing control token"),
    ] {
        let (status, response) = raw_tcp(addr, &request).await;
        assert_eq!(status, 401, "{response}");
        assert!(response.contains("www-authenticate: Bearer"), "{response}");
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let error: api::ErrorBody = serde_json::from_str(body).unwrap();
        assert!(error.error.starts_with(why), "{body}");
        assert!(
            error.error.contains("Authorization: Bearer TOKEN"),
            "{body}"
        );
    }
    assert_eq!(auth.refused(), 5);
    let (status, _) = raw_tcp(addr, &get("/v1/members", Some("Bearer t0ken"))).await;
    assert_eq!(status, 200);

    // The client turns a 401 into one line naming the agent and the fix.
    for token in [None, Some(TokenSource::Value("wrong".into()))] {
        let client = Client::new(server.endpoint().clone()).with_token(token);
        let err = client.info().await.unwrap_err();
        assert!(matches!(err, ClientError::Unauthorized { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "the agent at {addr} refused the request: wrong or missing control token \
                 (set --control-token or RUMOR_CONTROL_TOKEN)"
            )
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_unix_socket_needs_no_token_and_ignores_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let auth = ControlAuth::new(Some(ControlToken::new("t0ken").unwrap()));
    let server = serve(
        &ControlEndpoint::Unix(socket.clone()),
        context(fake_cluster(), auth.clone()),
    )
    .await
    .unwrap();
    for request in [
        "GET /v1/members HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /v1/members HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer wrong\r\n\r\n",
    ] {
        let (status, body) = raw(&socket, request).await;
        assert_eq!(status, 200, "{body}");
    }
    // A client with a token file it cannot read still works: the token is not needed here.
    let client = Client::new(ControlEndpoint::Unix(socket.clone()))
        .with_token(Some(TokenSource::File(dir.path().join("missing"))));
    assert!(client.members(&MembersQuery::default()).await.is_ok());
    assert_eq!(auth.refused(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn internal_queries_cannot_be_sent_through_the_public_endpoint() {
    let f = start().await;
    for name in ["_rumor_ping", "_rumor_keys"] {
        let (status, body) = raw(
            &f.socket,
            &post("/v1/query", &format!(r#"{{"name":"{name}"}}"#)),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("reserved for rumor's own queries"), "{body}");
    }
    f.server.shutdown().await;
}

/// A cluster handle that answers `info` (and nothing else), for the metrics endpoint.
fn cluster_with_info() -> ClusterHandle {
    let (commands, mut rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(command) = rx.recv().await {
            if let Command::Info(reply) = command {
                let _ = reply.send(crate::cluster::ClusterInfo {
                    node: "web-1".into(),
                    advertise: "127.0.0.1:7946".parse().unwrap(),
                    generation: 1,
                    connected: true,
                    members_alive: 3,
                    members_leaving: 0,
                    members_left: 1,
                    members_failed: 0,
                    event_clock: 5,
                    max_event_bytes: 1024,
                    events_kept: 0,
                    event_retention: 1024,
                    event_retention_secs: 3600,
                    profile: "local".into(),
                    name_conflicts: vec![],
                    event_latency: Default::default(),
                    counters: Default::default(),
                });
            }
        }
    });
    ClusterHandle::answered_by(commands)
}

#[tokio::test]
async fn metrics_are_served_on_the_control_api_and_on_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let ctx = context(cluster_with_info(), ControlAuth::default());
    let control = serve(&ControlEndpoint::Unix(socket.clone()), ctx.clone())
        .await
        .unwrap();
    let response = {
        let mut stream = UnixStream::connect(&socket).await.unwrap();
        stream
            .write_all(get("/metrics", None).as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("content-type: text/plain; version=0.0.4"),
        "{response}"
    );
    assert!(response.contains("\nrumor_up 1\n"), "{response}");
    assert!(
        response.contains("rumor_members{status=\"alive\"} 3\n"),
        "{response}"
    );

    // The metrics listener: /metrics without a token, nothing else.
    let metrics = serve_metrics("127.0.0.1:0".parse().unwrap(), ctx)
        .await
        .unwrap();
    let ControlEndpoint::Tcp(addr) = metrics.endpoint().clone() else {
        panic!("expected tcp")
    };
    let (status, response) = raw_tcp(addr, &get("/metrics", None)).await;
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("rumor_event_clock 5\n"), "{response}");
    let (status, response) = raw_tcp(addr, &get("/v1/members", None)).await;
    assert_eq!(status, 404, "{response}");
    assert!(response.contains("serves only GET /metrics"), "{response}");
    let (status, _) = raw_tcp(addr, &post("/metrics", "{}")).await;
    assert_eq!(status, 405);
    metrics.shutdown().await;
    control.shutdown().await;
}

#[tokio::test]
async fn an_absent_agent_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let client = Client::new(ControlEndpoint::Unix(socket.clone()));
    let err = client.info().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot reach the rumor agent at {}: ",
            socket.display()
        )),
        "{text}"
    );
    assert!(text.contains("Is `rumor agent` running?"), "{text}");
    assert!(
        text.ends_with("--control PATH|HOST:PORT or RUMOR_CONTROL."),
        "{text}"
    );
    assert!(!text.contains('\n'));
}

/// A dispatcher with no handlers (the control API only reads its status).
fn no_handlers() -> rumor_handlers::Dispatcher {
    let local = rumor_handlers::LocalNode {
        name: "test".into(),
        tags: Default::default(),
    };
    rumor_handlers::Dispatcher::new(local, vec![]).expect("an empty handler set is valid")
}
