//! The life the profiled agent goes through, and the CLI commands profiled after it.
//!
//! Agent `a` runs under callgrind as a cluster member would: it joins `b`, has a shell handler
//! for user events, a query handler, a member-event handler and a metrics endpoint; it receives
//! user events and queries, answers the control commands, is scraped once, sees `c` crash and
//! `b` leave, and stops on SIGTERM. Then each common CLI command runs under callgrind against
//! an agent of its own (`d`). The agents other than `a` run natively.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where callgrind wrote its profiles.
pub struct Profiles {
    /// The agent's.
    pub agent: PathBuf,
    /// One per CLI command.
    pub cli: Vec<PathBuf>,
}

/// Runs the agent under callgrind through its workload, then each CLI command.
pub fn profile(bin: &Path, dir: &Path) -> anyhow::Result<Profiles> {
    let stamps = dir.join("stamps");
    std::fs::create_dir_all(&stamps)?;
    let mut ports = Ports::new();
    let (pa, pb, pc, metrics) = (ports.free()?, ports.free()?, ports.free()?, ports.free()?);
    let seed = format!("127.0.0.1:{pb}");
    let b = agent(bin, dir, "b", pb, &[], None)?;
    let user = format!(
        "user:bench=date +%s%N >> {}/$SERF_SELF_NAME",
        stamps.display()
    );
    let agent_out = dir.join("agent.out");
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let a = agent(
        bin,
        dir,
        "a",
        pa,
        &[
            "--join",
            &seed,
            "--tag",
            "role=web",
            "--event-handler",
            &user,
            "--event-handler",
            "query:bench=echo ok",
            "--event-handler",
            "member-join,member-failed=cat > /dev/null",
            "--metrics",
            &metrics_addr,
        ],
        Some(&agent_out),
    )?;
    let c = agent(bin, dir, "c", pc, &["--join", &seed], None)?;
    let sock = |n: &str| dir.join(n).join("control.sock");
    let cli = |node: &str, args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new(bin)
            .args(args)
            .arg("--control")
            .arg(sock(node))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("rumor {} failed: {status}", args.join(" "));
        }
        Ok(())
    };
    wait_until(Duration::from_secs(60), "3 members alive on a", || {
        let out = Command::new(bin)
            .args(["members", "--control"])
            .arg(sock("a"))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.matches("alive").count() == 3).then_some(())
    })?;
    for k in 0..5 {
        cli("b", &["event", "bench", &format!("x{k}")])?;
        std::thread::sleep(Duration::from_millis(500));
        cli("b", &["query", "bench"])?;
    }
    for args in [
        &["members"][..],
        &["members", "--format", "json"],
        &["events", "--format", "json"],
        &["info"],
        &["tags", "--set", "version=2"],
        &["reachability"],
        &["event", "from-a", "y"],
        &["query", "bench"],
    ] {
        cli("a", args)?;
    }
    let _ = std::net::TcpStream::connect(&metrics_addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
        s.read_to_end(&mut Vec::new())
    });
    // A member that crashes, then one that leaves; then the agent itself stops.
    kill(&c, libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(8));
    cli("b", &["leave"])?;
    std::thread::sleep(Duration::from_secs(5));
    kill(&a, libc::SIGTERM);
    wait_exit(a, Duration::from_secs(60))?;
    wait_exit(b, Duration::from_secs(10))?;

    // The CLI, against an agent of its own.
    let d = agent(
        bin,
        dir,
        "d",
        ports.free()?,
        &["--event-handler", "query:bench=echo ok"],
        None,
    )?;
    let mut cli_outs = Vec::new();
    for (i, args) in [
        &["event", "bench", "x"][..],
        &["query", "bench"],
        &["members"],
        &["members", "--format", "json"],
        &["members", "--tag", "role=web"],
        &["events", "--format", "json"],
        &["info"],
        &["tags", "--set", "v=1"],
        &["reachability"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.join(format!("cli-{i}.out"));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--demangle=no")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(bin)
            .args(args)
            .arg("--control")
            .arg(sock("d"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("rumor {} under callgrind failed: {status}", args.join(" "));
        }
        cli_outs.push(out);
    }
    kill(&d, libc::SIGTERM);
    wait_exit(d, Duration::from_secs(10))?;
    Ok(Profiles {
        agent: agent_out,
        cli: cli_outs,
    })
}

/// Starts `rumor agent` named `name` on `port` (under callgrind if `callgrind_out` is set),
/// and waits for its control socket.
fn agent(
    bin: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    extra: &[&str],
    callgrind_out: Option<&Path>,
) -> anyhow::Result<Agent> {
    let data = dir.join(name);
    let mut command = match callgrind_out {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg("--demangle=no")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command
        .args(["agent", "--node", name, "--profile", "local"])
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?);
    let child = Agent(Some(
        command
            .spawn()
            .with_context(|| format!("cannot start agent {name}"))?,
    ));
    let sock = data.join("control.sock");
    wait_until(Duration::from_secs(60), &format!("agent {name}"), || {
        sock.exists().then_some(())
    })?;
    Ok(child)
}

fn wait_until<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent this program started: killed if it is still running when dropped (on an error
/// part-way), so a failed run leaves no agent behind.
struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill(agent: &Agent, signal: libc::c_int) {
    if let Some(child) = &agent.0 {
        // SAFETY: kill(2) of a child this program started and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }
}

fn wait_exit(mut agent: Agent, limit: Duration) -> anyhow::Result<()> {
    let Some(mut child) = agent.0.take() else {
        return Ok(());
    };
    let waited = wait_until(limit, "an agent to exit", || {
        child.try_wait().ok().flatten()
    });
    if waited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    waited.map(|_| ())
}

/// Ports for the agents: each free for both TCP and UDP on 127.0.0.1 when handed out, never
/// the same twice, and below the kernel's ephemeral ports, so that no outgoing connection takes
/// one before its agent binds it.
struct Ports {
    next: u16,
}

impl Ports {
    const LOWEST: u16 = 20000;
    const HIGHEST: u16 = 32767;

    /// Starts at an offset of the process id, so that two runs at once rarely meet.
    fn new() -> Ports {
        Ports {
            next: Self::LOWEST + (std::process::id() % 10_000) as u16,
        }
    }

    fn free(&mut self) -> anyhow::Result<u16> {
        while self.next <= Self::HIGHEST {
            let port = self.next;
            self.next += 1;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
                && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            {
                return Ok(port);
            }
        }
        bail!(
            "no port free for both TCP and UDP on 127.0.0.1 up to {}",
            Self::HIGHEST
        )
    }
}
