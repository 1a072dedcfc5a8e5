//! The agent's edges against strangers and bad luck, with real processes: unauthenticated
//! push-pull connections cannot drain its memory, block joins or flood its log; connections to
//! the control API and `/metrics` cannot take the descriptors handlers need; handlers never see
//! the agent's secrets; and names and tag values a handler would misread are refused, from the
//! CLI and from the wire.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumor::cluster::keyring::{Key, Keyring};
use rumor::cluster::message::{Broadcast, EventSeq};
use rumor::cluster::plumtree::{self, Out};
use rumor::cluster::wire::{self, Kind};
use rumor_handlers::event::UserEvent;
use rumor_tests::{
    Agent, Control, cluster_slot, free_port, rumor_command, tail, test_tempdir, wait_for,
};
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(20);
const MIB: u64 = 1024 * 1024;

/// A field of `rumor info --format json`, by its path.
fn info_u64(control: &Control, path: &[&str]) -> Result<u64, String> {
    let info = control.info()?;
    let mut value = &info;
    for key in path {
        value = &value[*key];
    }
    value
        .as_u64()
        .ok_or_else(|| format!("no {} in {info}", path.join(".")))
}

/// The peak resident memory of `pid` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

/// Lets this test process open `n` sockets (CI runners often start at 1,024 files).
fn allow_open_files(n: u64) -> bool {
    let raised = rumor::descriptors::raise_limit().expect("getrlimit/setrlimit");
    if raised.after < n {
        rumor_tests::skip_or_fail(&format!(
            "needs {n} open files, the hard limit is {}",
            raised.after
        ));
        return false;
    }
    true
}

/// A `rumor agent` started by the test itself, for what the harness's [`Agent`] does not set:
/// environment variables, and a limit on open files. Killed on drop (its log printed if the
/// test failed).
struct Spawned {
    child: Child,
    control: Control,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Spawned {
    fn start(name: &str, extra: &[&str], env: &[(&str, &str)], open_files: Option<u64>) -> Self {
        let dir = test_tempdir();
        let socket = dir.path().join("control.sock");
        let log = dir.path().join("agent.log");
        let mut cmd = rumor_command();
        cmd.args(["agent", "--node", name, "--profile", "local"])
            .arg("--bind")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--control")
            .arg(&socket)
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = open_files {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
            // reads a struct copied into the closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.spawn().expect("spawn rumor agent");
        let mut agent = Spawned {
            child,
            control: Control::new(name, socket),
            log,
            _dir: dir,
        };
        wait_for(Duration::from_secs(10), "the agent to serve", || {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("the agent exited ({status}):\n{}", agent.log());
            }
            agent.control.info().map(|_| ())
        });
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- agent log -----\n{}", tail(&self.log(), 60));
        }
    }
}

#[test]
fn frames_announcing_16_mib_cannot_make_an_encrypted_agent_buffer_them() {
    let _slot = cluster_slot();
    let key = Key::generate();
    let seed = Agent::start("mem-seed", &["--encrypt", &key.to_base64()]);
    let pid = seed.pid().unwrap();
    let before = peak_rss(pid);

    // What the probe did: 16 connections, each announcing a sealed 16 MiB frame and sending
    // all of it but the last byte, never to be authenticated.
    let mut header = Vec::new();
    wire::seal(
        Kind::PushPull,
        b"",
        Some(&Keyring::new(vec![key.clone()])),
        &mut header,
    );
    header.truncate(wire::HEADER_LEN);
    header.extend_from_slice(&(16 * MIB as u32).to_be_bytes());
    let mut conns: Vec<Option<TcpStream>> = (0..16)
        .map(|_| {
            let mut c = TcpStream::connect(seed.addr()).unwrap();
            c.set_write_timeout(Some(BOUND)).unwrap();
            c.write_all(&header).unwrap();
            Some(c)
        })
        .collect();
    let chunk = vec![0u8; MIB as usize];
    let mut sent = [0u64; 16];
    while conns.iter().any(Option::is_some) {
        for (i, slot) in conns.iter_mut().enumerate() {
            let Some(conn) = slot else { continue };
            let want = (16 * MIB - 1 - sent[i]).min(MIB) as usize;
            // A write error: the agent refused the frame and closed the connection.
            match conn.write_all(&chunk[..want]) {
                Ok(()) => sent[i] += want as u64,
                Err(_) => *slot = None,
            }
            if sent[i] == 16 * MIB - 1 {
                *slot = None;
            }
        }
    }
    let grown = peak_rss(pid).saturating_sub(before);
    eprintln!(
        "peak RSS grew by {} MiB ({} MiB sent in all)",
        grown / MIB,
        sent.iter().sum::<u64>() / MIB
    );
    // Before: 16 × 16 MiB reserved (the agent grew from 4 to 260 MB). Now at most the 32 MiB
    // budget of unauthenticated bytes, and a little for each connection.
    assert!(grown < 48 * MIB, "peak RSS grew by {} MiB", grown / MIB);
    let refused = info_u64(seed.control(), &["connections", "push_pull", "over_budget"]).unwrap();
    assert!(refused >= 1, "frames past the budget are counted");
    wait_for(BOUND, "the budget to be returned", || {
        match info_u64(
            seed.control(),
            &["connections", "push_pull", "unauthenticated_bytes"],
        )? {
            0 => Ok(()),
            n => Err(format!("{n} bytes still held")),
        }
    });

    // And a member still joins.
    let member = Agent::start(
        "mem-member",
        &[
            "--encrypt",
            &key.to_base64(),
            "--join",
            &seed.addr().to_string(),
        ],
    );
    assert_eq!(member.members().unwrap().len(), 2);
}

#[test]
fn idle_strangers_cannot_keep_members_from_joining() {
    if !allow_open_files(1_200) {
        return;
    }
    let _slot = cluster_slot();
    let seed = Agent::start("idle-seed", &[]);
    let joiner = Agent::start("idle-joiner", &[]);
    // 48 idle connections held every exchange slot: `rumor join` timed out after 5 s.
    let idle: Vec<TcpStream> = (0..48)
        .map(|_| TcpStream::connect(seed.addr()).unwrap())
        .collect();
    let start = Instant::now();
    joiner.cli_ok(&["join", &seed.addr().to_string()]);
    eprintln!("rumor join with 48 idle connections: {:?}", start.elapsed());

    // Far more than are kept: a new agent's --join still gets in.
    let more: Vec<TcpStream> = (0..1_000)
        .map(|_| TcpStream::connect(seed.addr()).unwrap())
        .collect();
    let start = Instant::now();
    let late = Agent::start("idle-late", &["--join", &seed.addr().to_string()]);
    eprintln!(
        "rumor agent --join with 1,048 idle connections: {:?}",
        start.elapsed()
    );
    wait_for(BOUND, "all three to be members", || {
        match seed.members()?.len() {
            3 => Ok(()),
            n => Err(format!("{n} members")),
        }
    });
    assert_eq!(late.members().unwrap().len(), 3);

    // The strangers were dropped, for room and for idling, and said so in the log.
    let counts = |name: &str| info_u64(seed.control(), &["connections", "push_pull", name]);
    wait_for(BOUND, "idle strangers to be dropped", || {
        let (evicted, idle) = (counts("evicted")?, counts("idle")?);
        if evicted > 0 && idle > 0 {
            Ok(())
        } else {
            Err(format!("evicted {evicted}, idle {idle}"))
        }
    });
    assert!(counts("unauthenticated").unwrap() <= 64);
    let log = seed.log();
    assert!(log.contains("dropped the one silent the longest"), "{log}");
    assert!(log.contains("sent nothing for 2s before a valid frame"));
    drop((idle, more));
}

#[test]
fn garbage_connections_are_logged_at_most_once_a_second() {
    let agent = Agent::start("garbage", &[]);
    let sent = std::cell::Cell::new(0u64);
    let garbage = |n: u64| {
        for _ in 0..n {
            let mut c = TcpStream::connect(agent.addr()).unwrap();
            let _ = c.write_all(b"GET / HTTP/1.1\r\n\r\n");
        }
        sent.set(sent.get() + n);
    };
    let offset = agent.log_len();
    let start = Instant::now();
    garbage(5_000);
    // Each is read and found malformed, or dropped unread to make room for the next.
    let counted = wait_for(BOUND, "5,000 garbage connections to be counted", || {
        let count = |name| info_u64(agent.control(), &["connections", "push_pull", name]);
        match count("malformed")? + count("evicted")? {
            n if n >= 5_000 => Ok(n),
            n => Err(format!("{n} counted")),
        }
    });
    let seconds = start.elapsed().as_secs();
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("rejected push-pull stream"))
            .count() as u64
    };
    let logged = lines(&agent.log_since(offset));
    eprintln!("5,000 garbage connections in {seconds} s: {logged} log lines, {counted} counted");
    assert!(
        logged <= seconds + 2,
        "{logged} lines in {seconds} s:\n{}",
        agent.log_since(offset)
    );

    // Every rejection is in the log, as a line or in the count of a later line that says how
    // many were left out (the last window's count comes with the next line: one more each
    // poll until it is logged).
    let malformed = info_u64(agent.control(), &["connections", "push_pull", "malformed"])
        .unwrap_or_else(|e| panic!("{e}"));
    let accounted = wait_for(BOUND, "every malformed connection in the log", || {
        garbage(1);
        let log = agent.log_since(offset);
        let rejected: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("rejected push-pull stream"))
            .collect();
        let suppressed: u64 = rejected
            .iter()
            .filter_map(|l| l.split("suppressed=").nth(1)?.split_whitespace().next())
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        let accounted = rejected.len() as u64 + suppressed;
        (accounted >= malformed && suppressed > 0)
            .then_some(accounted)
            .ok_or_else(|| format!("{accounted} of {malformed}: {}", tail(&log, 3)))
    });
    assert!(accounted <= sent.get(), "{accounted} of {}", sent.get());
}

#[test]
fn a_flood_of_metrics_connections_leaves_events_fast_and_handlers_running() {
    if !allow_open_files(1_200) {
        return;
    }
    let dir = test_tempdir();
    let ran = dir.path().join("ran");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let handler = format!("user:ping=echo ran >> {}", ran.display());
    let agent = Spawned::start(
        "fd-agent",
        &[
            "--metrics",
            &metrics.to_string(),
            "--event-handler",
            &handler,
        ],
        &[],
        Some(1024),
    );
    // What `rumor event` takes on this machine now, before the flood.
    let start = Instant::now();
    agent.control.cli_ok(&["event", "warm-up"]);
    let baseline = start.elapsed();
    // 1,100 idle connections to the token-less metrics port, with the agent at 1,024 files.
    let flood: Vec<TcpStream> = (0..1_100)
        .map(|_| TcpStream::connect(metrics).unwrap())
        .collect();
    wait_for(
        BOUND,
        "the metrics listener to have made room",
        || match info_u64(
            &agent.control,
            &["connections", "control", "metrics", "evicted"],
        )? {
            n if n > 900 => Ok(()),
            n => Err(format!("{n} evicted")),
        },
    );
    let start = Instant::now();
    agent.control.cli_ok(&["event", "ping"]);
    let took = start.elapsed();
    eprintln!("rumor event with 1,100 connections to /metrics: {took:?} ({baseline:?} before)");
    // It took 7-9 s more before (accept failing with EMFILE); it takes milliseconds more.
    assert!(
        took < baseline + Duration::from_secs(3),
        "rumor event took {took:?}, {baseline:?} before the flood"
    );
    wait_for(
        BOUND,
        "the handler to run",
        || match std::fs::read_to_string(&ran) {
            Ok(s) if s == "ran\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let info = agent.control.info().unwrap();
    assert_eq!(info["handlers"][0]["start_failures"], 0, "{info}");
    let open = info["connections"]["control"]["metrics"]["open"]
        .as_u64()
        .unwrap();
    assert!(open <= 128, "{open} connections kept");
    // A scrape still gets its answer.
    let mut scrape = TcpStream::connect(metrics).unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    scrape.read_to_string(&mut page).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(
        "rumor_control_connections_dropped_total{listener=\"metrics\",reason=\"evicted\"}"
    ));
    drop(flood);
}

#[test]
fn a_request_body_that_never_arrives_times_out() {
    let agent = Agent::start("body-timeout", &[]);
    let mut conn = UnixStream::connect(agent.control_path()).unwrap();
    conn.write_all(
        b"POST /v1/event HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"name\":",
    )
    .unwrap();
    conn.set_read_timeout(Some(BOUND)).unwrap();
    let start = Instant::now();
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(response.contains("did not arrive within 10s"), "{response}");
    assert!(start.elapsed() < BOUND);
}

#[test]
fn handlers_do_not_inherit_the_agents_secrets() {
    let dir = test_tempdir();
    let dump = dir.path().join("env");
    let handler = format!("user:dump=env > {}", dump.display());
    let key = Key::generate().to_base64();
    let token = "c0ffee0123456789abcdef0123456789";
    let agent = Spawned::start(
        "secrets",
        &["--event-handler", &handler],
        &[
            ("RUMOR_ENCRYPT", &key),
            ("RUMOR_CONTROL_TOKEN", token),
            ("TRUST_EDGES_MARKER", "inherited"),
        ],
        None,
    );
    agent.control.cli_ok(&["event", "dump"]);
    let env = wait_for(BOUND, "the handler to dump its environment", || {
        std::fs::read_to_string(&dump)
            .ok()
            .filter(|s| s.contains("SERF_EVENT=user"))
            .ok_or_else(|| "no dump yet".to_string())
    });
    assert!(env.contains("TRUST_EDGES_MARKER=inherited"), "{env}");
    assert!(env.contains("RUMOR_USER_EVENT=dump"), "{env}");
    for secret in ["RUMOR_ENCRYPT=", "RUMOR_CONTROL_TOKEN="] {
        assert!(!env.contains(secret), "{secret} reached the handler");
    }
    assert!(!env.contains(&key) && !env.contains(token));
}

/// A direct (tree) datagram carrying a user event named `name`, as any host could send one to
/// an open cluster.
fn user_event_datagram(name: &str, ltime: u64) -> Vec<u8> {
    let event = Broadcast::User {
        event: UserEvent {
            ltime,
            name: name.into(),
            payload: b"from the wire".to_vec(),
            coalesce: false,
            origin: "stranger".into(),
        },
        // The stranger's `ltime`th event (each one a new place in its stream).
        seq: EventSeq {
            generation: 1,
            seq: ltime,
        },
        sent_unix_ms: 0,
    };
    let mut frame = Vec::new();
    plumtree::encode(&Out::Direct(Arc::from(event.encode())), &mut frame);
    let mut packet = Vec::new();
    wire::seal(Kind::Tree, &frame, None, &mut packet);
    packet
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn names_and_tag_values_a_handler_would_misread_are_refused() {
    let dir = test_tempdir();
    let seen = dir.path().join("seen");
    let handler = format!("user=echo \"$SERF_USER_EVENT\" >> {}", seen.display());
    let agent = Agent::start("names", &["--event-handler", &handler]);

    for (name, says) in [
        ("../../etc/cron.d/x", "contains '/'"),
        ("deploy/web", "contains '/'"),
        ("a..b", "contains \"..\""),
        ("..", "starts with \".\""),
        ("-rf", "starts with \"-\""),
    ] {
        let err = agent.try_cli(&["event", "--", name]).unwrap_err();
        assert!(err.contains(says), "{name}: {err}");
        let err = agent
            .try_cli(&["query", "--timeout", "1s", "--", name])
            .unwrap_err();
        assert!(err.contains(says), "query {name}: {err}");
    }
    for (tag, says) in [
        ("zones=a,b", "contains ','"),
        ("note=a\u{1}b", "control character"),
        ("note=a\u{1b}[31m", "control character"),
    ] {
        let err = agent.try_cli(&["tags", "--set", tag]).unwrap_err();
        assert!(err.contains(says), "{tag}: {err}");
    }
    // What a user needs still works: namespaced names, '=' in a value.
    agent.cli_ok(&["event", "deploy:web.v2"]);
    agent.cli_ok(&["tags", "--set", "url=https://x/?a=b"]);

    // From the wire: the same names are refused and counted; a valid one is delivered.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rejected = || agent.counter("packets_rejected").unwrap();
    let before = rejected();
    udp.send_to(&user_event_datagram("../../etc/x", 900), agent.addr())
        .unwrap();
    udp.send_to(&user_event_datagram("-rf", 901), agent.addr())
        .unwrap();
    udp.send_to(&user_event_datagram("wire-ok", 902), agent.addr())
        .unwrap();
    wait_for(BOUND, "the valid events to run", || {
        let got = read(&seen);
        if got.contains("deploy:web.v2\n") && got.contains("wire-ok\n") {
            Ok(())
        } else {
            Err(got)
        }
    });
    wait_for(BOUND, "both invalid datagrams to be counted", || {
        match rejected() - before {
            2 => Ok(()),
            n => Err(format!("{n} counted")),
        }
    });
    let got = read(&seen);
    assert_eq!(got.lines().count(), 2, "{got}");
    assert!(agent.log().contains("malformed broadcast on the tree"));
    let info: Value = agent.info().unwrap();
    assert_eq!(info["handlers"][0]["runs"], 2, "{info}");
}
