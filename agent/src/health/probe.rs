//! One run of a check: a command, an HTTP GET or a TCP connect, bounded in time and in what it
//! keeps, turned into a [`State`] and a line of output for people.
//!
//! * A command runs through the shell runtime of the handlers ([`rumor_handlers::shell::run`]):
//!   in its own process group, killed whole at the timeout, its output drained as it comes and
//!   only the end kept. A check that hangs is critical at its timeout; one that floods its
//!   output costs the same as one that prints a line.
//! * Whatever a probe returns, [`OUTPUT_LIMIT`] bytes of it are kept: what `rumor checks`
//!   shows and the notify event carries.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rumor_handlers::shell::{self, Invocation};
use tokio::net::TcpStream;

use super::config::{HttpTarget, Probe};
use super::state::State;

/// The bytes of output a check keeps (the last ones of a command's, the first of a body).
pub const OUTPUT_LIMIT: usize = 4096;

/// What one run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: State,
    pub output: String,
}

impl Outcome {
    fn critical(output: String) -> Outcome {
        Outcome {
            state: State::Critical,
            output,
        }
    }
}

/// Runs `probe` once, within `timeout`.
pub async fn run(probe: &Probe, timeout: Duration) -> Outcome {
    match probe {
        Probe::Command(command) => run_command(command, timeout).await,
        Probe::Http(target) => match tokio::time::timeout(timeout, http(target)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                Outcome::critical(format!("GET {}: no answer within {timeout:?}", target.url))
            }
        },
        Probe::Tcp(addr) => {
            let start = Instant::now();
            match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(_)) => Outcome {
                    state: State::Passing,
                    output: format!("connected to {addr} in {:?}", start.elapsed()),
                },
                Ok(Err(e)) => Outcome::critical(format!("cannot connect to {addr}: {e}")),
                Err(_) => Outcome::critical(format!(
                    "cannot connect to {addr}: no answer within {timeout:?}"
                )),
            }
        }
    }
}

async fn run_command(command: &str, timeout: Duration) -> Outcome {
    let result = shell::run(Invocation {
        command: command.to_string(),
        env: Vec::new(),
        stdin: Vec::new(),
        timeout,
    })
    .await;
    let mut output = result.stdout;
    if !result.stderr.is_empty() {
        if !output.is_empty() && !output.ends_with(b"\n") {
            output.push(b'\n');
        }
        output.extend_from_slice(&result.stderr);
    }
    let mut text = tail(&String::from_utf8_lossy(&output), OUTPUT_LIMIT);
    let state = if let Some(error) = result.error {
        text = error;
        State::Critical
    } else if result.timed_out {
        text = join(
            &format!("timed out after {timeout:?}: killed with what it started"),
            &text,
        );
        State::Critical
    } else if let Some(signal) = result.signal {
        text = join(&format!("killed by signal {signal}"), &text);
        State::Critical
    } else {
        State::from_exit_code(result.exit_code)
    };
    Outcome {
        state,
        output: text,
    }
}

async fn http(target: &HttpTarget) -> Outcome {
    let fail = |what: String| Outcome::critical(format!("GET {}: {what}", target.url));
    let stream = match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(stream) => stream,
        Err(e) => return fail(format!("cannot connect: {e}")),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return fail(e.to_string()),
        };
    // The connection is driven beside the request; it ends with this function.
    let connection = tokio::spawn(connection);
    let outcome = async {
        let request = Request::get(target.path.as_str())
            .header(HOST, target.authority.as_str())
            .header(
                USER_AGENT,
                concat!("rumor-health-check/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        // The first OUTPUT_LIMIT bytes are enough to say what is wrong; the rest is not read.
        while bytes.len() < OUTPUT_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        bytes.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("HTTP {status}, then the body failed: {e}")),
                None => break,
            }
        }
        bytes.truncate(OUTPUT_LIMIT);
        let state = match target.status {
            Some(want) if status.as_u16() == want => State::Passing,
            Some(_) => State::Critical,
            None if status.is_success() => State::Passing,
            None if status.as_u16() == 429 => State::Warning,
            None => State::Critical,
        };
        Ok(Outcome {
            state,
            output: join(
                &format!("HTTP {status}"),
                String::from_utf8_lossy(&bytes).trim(),
            ),
        })
    }
    .await;
    connection.abort();
    outcome.unwrap_or_else(fail)
}

/// `first`, then `rest` on the next line if there is any.
fn join(first: &str, rest: &str) -> String {
    if rest.trim().is_empty() {
        first.to_string()
    } else {
        format!("{first}\n{}", rest.trim_end())
    }
}

/// The last `limit` bytes of `text`, trimmed; when cut, from the first whole line on.
fn tail(text: &str, limit: usize) -> String {
    let text = text.trim();
    if text.len() <= limit {
        return text.to_string();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let kept = &text[start..];
    match kept.split_once('\n') {
        Some((_, whole_lines)) if !whole_lines.is_empty() => whole_lines.to_string(),
        _ => kept.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_codes_timeouts_and_floods() {
        let second = Duration::from_secs(5);
        let ok = run(&Probe::Command("echo fine".into()), second).await;
        assert_eq!(
            ok,
            Outcome {
                state: State::Passing,
                output: "fine".into()
            }
        );
        let warn = run(&Probe::Command("echo slow >&2; exit 1".into()), second).await;
        assert_eq!((warn.state, warn.output.as_str()), (State::Warning, "slow"));
        let missing = run(&Probe::Command("no-such-program-here".into()), second).await;
        assert_eq!(missing.state, State::Critical);
        assert!(missing.output.contains("not found"), "{missing:?}");

        let start = Instant::now();
        let hang = run(
            &Probe::Command("sleep 30 & sleep 30".into()),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(hang.state, State::Critical);
        assert!(hang.output.starts_with("timed out after 200ms"), "{hang:?}");
        assert!(start.elapsed() < Duration::from_secs(10));

        let flood = run(
            &Probe::Command("yes flood | head -n 2000000; exit 2".into()),
            second,
        )
        .await;
        assert_eq!(flood.state, State::Critical);
        assert!(flood.output.len() <= OUTPUT_LIMIT, "{}", flood.output.len());
        assert!(
            flood.output.lines().all(|l| l == "flood"),
            "whole lines only"
        );
    }

    #[tokio::test]
    async fn tcp_and_http_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for answer in ["200 OK", "429 Too Many Requests", "500 Oops"] {
                let (mut s, _) = listener.accept().await.unwrap();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = "body text";
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {answer}\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        });
        let table: super::super::config::CheckTable =
            toml::from_str(&format!("name = \"h\"\nhttp = \"http://{addr}/health\"")).unwrap();
        let probe = table.to_config(None).unwrap().probe;
        let second = Duration::from_secs(5);
        let states: Vec<(State, String)> = [
            run(&probe, second).await,
            run(&probe, second).await,
            run(&probe, second).await,
        ]
        .into_iter()
        .map(|o| (o.state, o.output))
        .collect();
        assert_eq!(states[0], (State::Passing, "HTTP 200 OK\nbody text".into()));
        assert_eq!(states[1].0, State::Warning);
        assert_eq!(states[2].0, State::Critical);
        // The listener closes when the server task ends, which may come after the third
        // answer was read: only then is the next connection refused.
        server.await.unwrap();
        let refused = run(&probe, second).await;
        assert_eq!(refused.state, State::Critical);
        assert!(refused.output.contains("cannot connect"), "{refused:?}");
        let tcp = run(&Probe::Tcp(addr.to_string()), second).await;
        assert_eq!(tcp.state, State::Critical, "nothing listens any more");
    }
}
