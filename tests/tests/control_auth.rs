//! The control API's access control and metrics as a user meets them: TCP control needs the
//! token (401 and a log line otherwise), the Unix socket is private, and `/metrics` counts a
//! real event, on the control API and on `--metrics ADDR`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use rumor_tests::process::wait_timeout;
use rumor_tests::{
    Agent, cluster_slot, free_port, rumor_command, run_with_timeout, tail, test_tempdir, wait_for,
    write_file,
};

const TOKEN: &str = "3f9c2a7e1b6d4c08a5e2f1d7c9b3a6e4";
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// A `rumor agent` whose control API is on TCP (the harness's [`Agent`] always serves a Unix
/// socket, so this one is spawned directly). Killed on drop; its log is printed if the test
/// fails.
struct TcpAgent {
    child: Child,
    control: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TcpAgent {
    /// Starts `rumor agent --control 127.0.0.1:PORT [extra...]` and waits until `rumor info`
    /// answers with the token.
    fn start(extra: &[&str]) -> TcpAgent {
        let dir = test_tempdir();
        let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.path().join("agent.log");
        let child = spawn_agent(dir.path(), control, extra, &log);
        let mut agent = TcpAgent {
            child,
            control,
            log,
            _dir: dir,
        };
        // On a timeout, the panic names the last refusal and `Drop` prints the log.
        wait_for(
            Duration::from_secs(10),
            &format!("an answer on {control}"),
            || {
                if let Some(status) = agent.child.try_wait().unwrap() {
                    panic!(
                        "the agent exited ({status}) before serving:\n{}",
                        agent.log()
                    );
                }
                let out = agent.cli(&["info"], Some(TOKEN), &[]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(stderr(&out))
                }
            },
        );
        agent
    }

    /// Runs `rumor SUBCOMMAND --control 127.0.0.1:PORT [--control-token T] [env...]`.
    fn cli(&self, args: &[&str], token: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut cmd = rumor_command();
        cmd.args(args)
            .arg("--control")
            .arg(self.control.to_string());
        if let Some(token) = token {
            cmd.args(["--control-token", token]);
        }
        cmd.envs(env.iter().copied());
        run_with_timeout(&mut cmd, CLI_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TcpAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- agent log -----\n{}\n-----", tail(&self.log(), 60));
        }
    }
}

fn spawn_agent(dir: &Path, control: SocketAddr, extra: &[&str], log: &Path) -> Child {
    let log_out = std::fs::File::create(log).unwrap();
    let log_err = log_out.try_clone().unwrap();
    rumor_command()
        .args(["agent", "--node", "tcp-agent", "--profile", "local"])
        .args(["--log-level", "debug"])
        .arg("--bind")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--control")
        .arg(control.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_out))
        .stderr(Stdio::from(log_err))
        .spawn()
        .unwrap()
}

/// Sends one raw HTTP/1.1 request and returns the whole response (status line, headers, body).
fn http(stream: &mut (impl Read + Write), path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn http_tcp(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    http(&mut TcpStream::connect(addr).unwrap(), path, token)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    write_file(&path, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn tcp_control_needs_the_token() {
    let _slot = cluster_slot();
    let secrets = test_tempdir();
    let token_file = private_file(secrets.path(), "token", &format!("{TOKEN}\n"), 0o600);
    let agent = TcpAgent::start(&["--control-token-file", token_file.to_str().unwrap()]);

    // Without a token: 401 on the wire, with a JSON error, before anything is routed.
    let response = http_tcp(agent.control, "/v1/members", None);
    assert!(
        response.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{response}"
    );
    assert!(
        response.contains("{\"error\":\"missing control token"),
        "{response}"
    );
    let response = http_tcp(agent.control, "/v1/members", Some(TOKEN));
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("\"name\":\"tcp-agent\""), "{response}");

    // The CLI: one clear line without the token or with a wrong one.
    let expected = format!(
        "error: the agent at {} refused the request: wrong or missing control token \
         (set --control-token or RUMOR_CONTROL_TOKEN)\n",
        agent.control
    );
    let offset = agent.log().len();
    for token in [None, Some("not-the-token")] {
        let out = agent.cli(&["members"], token, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(stderr(&out), expected);
    }
    // ... and the agent logs each refusal with the peer's address (rate-limited, but not this
    // few).
    let log = wait_for(Duration::from_secs(5), "the refusals in the log", || {
        let log = agent.log()[offset..].to_string();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("refused GET /v1/members from 127.0.0.1:"))
            .collect();
        match refusals[..] {
            [missing, wrong] => Ok((missing.to_string(), wrong.to_string())),
            _ => Err(log.clone()),
        }
    });
    assert!(log.0.ends_with(": missing control token"), "{}", log.0);
    assert!(log.1.ends_with(": wrong control token"), "{}", log.1);
    let log = agent.log();
    assert!(
        !log.contains(TOKEN) && !log.contains("not-the-token"),
        "{log}"
    );

    // With the token: by flag, by RUMOR_CONTROL_TOKEN, by token file.
    let out = agent.cli(&["members"], Some(TOKEN), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tcp-agent"));
    let out = agent.cli(&["members"], None, &[("RUMOR_CONTROL_TOKEN", TOKEN)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent.cli(
        &["info", "--control-token-file", token_file.to_str().unwrap()],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent.cli(&["event", "deploy", "v1"], Some(TOKEN), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // /metrics on the TCP control API needs the token too, and counts the refusals.
    let response = http_tcp(agent.control, "/metrics", None);
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    let response = http_tcp(agent.control, "/metrics", Some(TOKEN));
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let refused = metric(&response, "rumor_control_unauthorized_total");
    assert!(refused >= 4, "{refused}\n{response}");
}

#[test]
fn tcp_control_without_a_token_or_with_an_exposed_token_file_does_not_start() {
    let dir = test_tempdir();
    let exposed = private_file(dir.path(), "token", TOKEN, 0o644);
    for (extra, expected) in [
        (vec![], "requires a token: set --control-token TOKEN"),
        (
            vec!["--control-token-file", exposed.to_str().unwrap()],
            "is readable by other users (mode 0644): run `chmod 600",
        ),
        (vec!["--control-token", "has space"], "printable ASCII"),
    ] {
        let control = SocketAddr::from(([0, 0, 0, 0], free_port()));
        let log = dir.path().join("agent.log");
        let mut child = spawn_agent(dir.path(), control, &extra, &log);
        let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the agent kept running with {extra:?}")
        });
        assert_eq!(status.code(), Some(1), "{extra:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains(expected), "{extra:?}: {text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
}

#[test]
fn a_non_loopback_tcp_endpoint_is_served_with_a_token() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let control = SocketAddr::from(([0, 0, 0, 0], free_port()));
    let log = dir.path().join("agent.log");
    let mut child = spawn_agent(dir.path(), control, &["--control-token", TOKEN], &log);
    let local = SocketAddr::from(([127, 0, 0, 1], control.port()));
    let response = wait_for(Duration::from_secs(10), "the agent on 0.0.0.0", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited {status}: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        TcpStream::connect(local)
            .map(|mut s| http(&mut s, "/v1/info", Some(TOKEN)))
            .map_err(|e| e.to_string())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
}

#[test]
fn the_unix_socket_is_private() {
    let _slot = cluster_slot();
    let agent = Agent::start("private", &[]);
    let mode = std::fs::metadata(agent.control_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    // No token is needed (or checked) on the socket.
    let out = agent.cli(&["info", "--control-token", "ignored"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The value of the sample `series` (name plus labels, exactly as exposed) in a scrape.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_a_real_event_and_handler_run() {
    let _slot = cluster_slot();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = Agent::start(
        "metrics",
        &[
            "--metrics",
            &metrics.to_string(),
            "--event-handler",
            "user:deploy=cat >/dev/null",
        ],
    );
    agent.cli_ok(&["event", "deploy", "v1"]);

    // The token-less listener: counters only.
    let scrape = wait_for(
        Duration::from_secs(10),
        "the handler run in /metrics",
        || {
            let response = http_tcp(metrics, "/metrics", None);
            if response.contains("rumor_handler_runs_total{handler=\"event-handler-1\"} 1\n") {
                Ok(response)
            } else {
                Err(response)
            }
        },
    );
    assert!(scrape.starts_with("HTTP/1.1 200 OK\r\n"), "{scrape}");
    assert!(
        scrape.contains("content-type: text/plain; version=0.0.4"),
        "{scrape}"
    );
    assert_eq!(metric(&scrape, "rumor_up"), 1);
    assert_eq!(metric(&scrape, "rumor_members{status=\"alive\"}"), 1);
    assert!(metric(&scrape, "rumor_event_clock") >= 1, "{scrape}");
    assert_eq!(
        metric(&scrape, "rumor_events_total{result=\"received\"}"),
        1
    );
    assert_eq!(
        metric(
            &scrape,
            "rumor_handler_failures_total{handler=\"event-handler-1\"}"
        ),
        0
    );
    assert_eq!(
        metric(&scrape, "rumor_handler_queued{handler=\"event-handler-1\"}"),
        0
    );
    for family in [
        "rumor_packets_total",
        "rumor_packets_dropped_total",
        "rumor_events_total",
        "rumor_push_pull_total",
        "rumor_handler_timeouts_total",
        "rumor_handler_dropped_total",
    ] {
        assert!(scrape.contains(&format!("# TYPE {family} ")), "{family}");
    }
    let response = http_tcp(metrics, "/v1/members", None);
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");

    // The same text on the control API's Unix socket.
    let mut socket = UnixStream::connect(agent.control_path()).unwrap();
    let response = http(&mut socket, "/metrics", None);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.contains("rumor_info{node=\"metrics\""),
        "{response}"
    );
}
