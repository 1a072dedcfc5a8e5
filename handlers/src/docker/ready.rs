//! Readiness by HTTP: one GET on a new container's port, as a health check's `http` kind asks
//! its target. Kept to what readiness needs: the status line decides, the body is not read.

use std::net::SocketAddr;

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
}
