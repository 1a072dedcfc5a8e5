//! Readiness by HTTP or by a command: one GET on a new container's port, as a health check's
//! `http` kind asks its target (the status line decides, the body is not read); or one run of
//! a shell command told where the container is, as a check's `command` kind.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::Empty;
use hyper::Request;
use hyper::body::Bytes;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Whether `GET path` on `addr` answers 2xx. Any failure (refused, reset, not HTTP) is "not
/// yet": the caller polls until its deadline.
pub async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    // The connection is driven beside the request; it ends with this function.
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, addr.to_string())
        .header(
            USER_AGENT,
            concat!("rumor-deploy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new());
    let ok = match request {
        Ok(request) => sender
            .send_request(request)
            .await
            .is_ok_and(|response| response.status().is_success()),
        Err(_) => false,
    };
    connection.abort();
    ok
}

/// Where a new container can be reached, as a readiness command is told.
pub struct Target<'a> {
    pub app: &'a str,
    pub ip: IpAddr,
    pub container_port: u16,
    pub host_port: u16,
}

/// Runs `/bin/sh -c command` once with the target in its environment (`RUMOR_APP`,
/// `RUMOR_CONTAINER_IP`, `RUMOR_CONTAINER_PORT`, `RUMOR_HOST_PORT`). Ok when it exits 0; else
/// how it ended and the end of its output, for the deploy's failure reason.
pub async fn command_ok(
    command: &str,
    target: Target<'_>,
    timeout: Duration,
) -> Result<(), String> {
    let run = crate::shell::run(crate::shell::Invocation {
        command: command.into(),
        env: vec![
            ("RUMOR_APP".into(), target.app.into()),
            ("RUMOR_CONTAINER_IP".into(), target.ip.to_string()),
            (
                "RUMOR_CONTAINER_PORT".into(),
                target.container_port.to_string(),
            ),
            ("RUMOR_HOST_PORT".into(), target.host_port.to_string()),
        ],
        stdin: Vec::new(),
        timeout,
    })
    .await;
    if run.success() {
        return Ok(());
    }
    let output = [run.stderr_tail(200), run.stdout_tail(200)]
        .into_iter()
        .find(|text| !text.is_empty());
    Err(match output {
        Some(output) => format!("{run}: {output}"),
        None => run.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server answering each connection with `status`, once.
    async fn server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn only_a_2xx_answer_is_ready() {
        assert!(http_ok(server("200 OK").await, "/").await);
        assert!(http_ok(server("204 No Content").await, "/healthz").await);
        assert!(!http_ok(server("503 Service Unavailable").await, "/").await);
        // Nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!http_ok(closed, "/").await);
    }

    #[tokio::test]
    async fn a_command_is_told_where_the_container_is_and_its_exit_decides() {
        let target = || Target {
            app: "web",
            ip: "10.1.2.3".parse().unwrap(),
            container_port: 80,
            host_port: 32768,
        };
        let second = Duration::from_secs(5);
        let check = r#"test "$RUMOR_APP $RUMOR_CONTAINER_IP:$RUMOR_CONTAINER_PORT $RUMOR_HOST_PORT" = "web 10.1.2.3:80 32768""#;
        assert_eq!(command_ok(check, target(), second).await, Ok(()));
        let err = command_ok("echo warming up >&2; exit 3", target(), second)
            .await
            .unwrap_err();
        assert_eq!(err, "exited with code 3: warming up");
        let err = command_ok("sleep 5", target(), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.starts_with("timed out after"), "{err}");
    }
}
