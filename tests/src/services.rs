//! Real programs the plugin tests drive: haproxy (master-worker), memcached, and the test
//! web backend, each a child process stopped when dropped; and the clients that talk to
//! them as an application would (an HTTP GET, memcached's text protocol, haproxy's master CLI).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::agent::Agent;
use crate::ports::free_port;
use crate::wait::wait_for;

/// Whether `program` is on the PATH.
pub fn program_available(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct ChildProcess {
    what: String,
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `cmd` with its output discarded.
    pub fn spawn(what: &str, cmd: &mut Command) -> ChildProcess {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
        ChildProcess {
            what: what.to_string(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The test web backend (`web-backend NAME PORT`, a binary of this crate) on 127.0.0.1.
pub fn web_backend(binary: &Path, name: &str, port: u16) -> ChildProcess {
    let mut process = ChildProcess::spawn(
        &format!("web backend {name}"),
        Command::new(binary).arg(name).arg(port.to_string()),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(Duration::from_secs(10), "the web backend to answer", || {
        if !process.is_running() {
            return Err(format!("{name} exited"));
        }
        http_get(addr).map(|_| ())
    });
    process
}

/// A web node of the haproxy tests and benchmark: a `web-backend` answering its name on a
/// free port, and its agent tagged `role=web` and `port=PORT`.
pub struct WebNode {
    pub name: String,
    pub port: u16,
    pub backend: ChildProcess,
    pub agent: Agent,
}

impl WebNode {
    /// `binary` is the `web-backend` program; the agent joins through `join`, with `extra`
    /// arguments more.
    pub fn start(binary: &Path, name: &str, join: &Agent, extra: &[&str]) -> WebNode {
        let port = free_port();
        let backend = web_backend(binary, name, port);
        let tag = format!("port={port}");
        let join = join.addr().to_string();
        let mut args = vec!["--tag", "role=web", "--tag", &tag, "--join", &join];
        args.extend_from_slice(extra);
        let agent = Agent::start(name, &args);
        WebNode {
            name: name.to_string(),
            port,
            backend,
            agent,
        }
    }

    /// Starts the web server again on its port (after a kill).
    pub fn restart_backend(&mut self, binary: &Path) {
        self.backend = web_backend(binary, &self.name, self.port);
    }
}

/// One `GET /` over a new connection; the response body, or what went wrong.
pub fn http_get(addr: SocketAddr) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response from {addr}: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!(
            "{addr} answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// haproxy in master-worker mode (`haproxy -W -S SOCKET -f CONFIG`), in the foreground, in
/// front of the backend `rumor_servers` the haproxy plugin fills.
pub struct Haproxy {
    pub config: PathBuf,
    pub master_socket: PathBuf,
    /// Where clients connect (a free port of 127.0.0.1).
    pub frontend: SocketAddr,
    process: ChildProcess,
}

impl Haproxy {
    /// Starts haproxy on [`Haproxy::initial_config`] (`haproxy.cfg` and `master.sock` in
    /// `dir`) and waits for its master CLI to answer.
    pub fn start(dir: &Path) -> Haproxy {
        let config = dir.join("haproxy.cfg");
        let master_socket = dir.join("master.sock");
        let frontend = SocketAddr::from(([127, 0, 0, 1], free_port()));
        std::fs::write(&config, Haproxy::initial_config(frontend))
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut process = ChildProcess::spawn(
            "haproxy",
            Command::new("haproxy")
                .arg("-W")
                .arg("-S")
                .arg(&master_socket)
                .arg("-f")
                .arg(&config),
        );
        wait_for(Duration::from_secs(10), "haproxy's master CLI", || {
            if !process.is_running() {
                return Err("haproxy exited (is its configuration valid?)".into());
            }
            master_cli(&master_socket, "show proc").map(|_| ())
        });
        Haproxy {
            config,
            master_socket,
            frontend,
            process,
        }
    }

    /// A config haproxy starts with before the plugin (or a script) writes its own: the
    /// frontend and an empty backend.
    pub fn initial_config(frontend: SocketAddr) -> String {
        format!(
            "global\n    master-worker\n    hard-stop-after 30s\ndefaults\n    mode http\n    \
             timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    \
             option redispatch\nfrontend f\n    bind {frontend}\n    default_backend rumor_servers\n\
             backend rumor_servers\n    balance roundrobin\n"
        )
    }

    /// `rumor plugin install haproxy` on `agent` for this haproxy (its config, master socket
    /// and frontend; backend ports from the tag `port`), with `settings` (`KEY=VALUE`) more.
    pub fn install_plugin(&self, agent: &Agent, settings: &[&str]) -> String {
        let ours = [
            format!("config={}", self.config.display()),
            format!("master_socket={}", self.master_socket.display()),
            format!("bind={}", self.frontend),
            "port_tag=port".to_string(),
        ];
        let mut args = vec!["plugin", "install", "haproxy"];
        for set in ours
            .iter()
            .map(String::as_str)
            .chain(settings.iter().copied())
        {
            args.extend(["--set", set]);
        }
        agent.cli_ok(&args)
    }

    /// The master's reload count and failed reloads, from `show proc`. The master refuses
    /// connections for a moment while it re-executes: retried for a few seconds.
    pub fn reloads(&self) -> Result<(u64, u64), String> {
        let text = wait_for(Duration::from_secs(10), "haproxy's master CLI", || {
            master_cli(&self.master_socket, "show proc")
        });
        let line = text
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("master"))
            .ok_or_else(|| format!("no master line in show proc: {text}"))?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let reloads = fields.get(2).and_then(|f| f.parse().ok());
        let failed = fields
            .get(4)
            .and_then(|f| f.trim_end_matches(']').parse().ok());
        match (reloads, failed) {
            (Some(r), Some(f)) => Ok((r, f)),
            _ => Err(format!("cannot read the reload counts in {line:?}")),
        }
    }

    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.process
    }
}

/// One command on haproxy's master CLI; its answer.
pub fn master_cli(socket: &Path, command: &str) -> Result<String, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    // The CLI answers and closes once the request side is closed (as `socat` does).
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("read {}: {e}", socket.display()))?;
    Ok(answer)
}

/// memcached on 127.0.0.1:PORT.
pub fn memcached(port: u16) -> ChildProcess {
    let mut cmd = Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-U", "0", "-m", "16", "-p"])
        .arg(port.to_string());
    // memcached refuses to run as root without a user to switch to.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "nobody"]);
    }
    let mut process = ChildProcess::spawn(&format!("memcached :{port}"), &mut cmd);
    wait_for(Duration::from_secs(10), "memcached to answer", || {
        if !process.is_running() {
            return Err("memcached exited".into());
        }
        memcached_command(&format!("127.0.0.1:{port}"), "version\r\n").map(|_| ())
    });
    process
}

/// Sends one memcached text-protocol request to `server` (`host:port` as a client list gives
/// it) and returns the answer, read up to its terminating line.
pub fn memcached_command(server: &str, request: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(server).map_err(|e| format!("connect {server}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let done = |a: &[u8]| {
        [
            &b"END\r\n"[..],
            b"STORED\r\n",
            b"ERROR\r\n",
            b"NOT_STORED\r\n",
        ]
        .iter()
        .any(|end| a.ends_with(end))
            || (a.starts_with(b"VERSION") && a.ends_with(b"\r\n"))
    };
    while !done(&answer) {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("read {server}: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// `GET PATH` on an HTTP server listening on a Unix socket (the agent's control API); the body.
pub fn unix_http_get(socket: &Path, path: &str) -> Result<String, String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: rumor\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read {}: {e}", socket.display()))?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .ok_or_else(|| format!("no HTTP response: {response:?}"))
}
