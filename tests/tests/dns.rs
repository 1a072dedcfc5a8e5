//! The DNS interface end to end: real agents on 127.0.0.1, one of them answering DNS
//! (`--dns`), asked with `dig` (Debian's dnsutils) the way a user or a script would.
//!
//! Every agent here has the address 127.0.0.1, so answers are told apart by name: SRV targets
//! (`NODE.node.rumor.`) and whether `NODE.node.rumor` exists.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use rumor_tests::services::program_available;
use rumor_tests::{
    Agent, cluster_slot, free_port, run_with_timeout, skip_or_fail, test_tempdir, wait_for,
    write_file,
};

const CONVERGE: Duration = Duration::from_secs(20);

/// What dig printed, read back: the status, the header flags and the records by section.
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: BTreeSet<String>,
    answer: Vec<Vec<String>>,
    authority: Vec<Vec<String>>,
    additional: Vec<Vec<String>>,
}

impl Dig {
    /// Column `i` of every answer record: 0 the name, 3 the type, 4.. the data.
    fn answer_column(&self, i: usize) -> BTreeSet<String> {
        self.answer.iter().map(|r| r[i..].join(" ")).collect()
    }

    /// The SRV targets of the answer, `NODE.node.rumor.`.
    fn srv_targets(&self) -> BTreeSet<String> {
        self.answer
            .iter()
            .filter(|r| r[3] == "SRV")
            .map(|r| r[7].clone())
            .collect()
    }
}

/// `dig @127.0.0.1 -p PORT +norec NAME TYPE [extra...]`, parsed.
fn dig(dns: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Result<Dig, String> {
    let mut cmd = Command::new("dig");
    cmd.arg(format!("@{}", dns.ip()))
        .args([
            "-p",
            &dns.port().to_string(),
            "+norec",
            "+time=2",
            "+tries=2",
        ])
        .args([name, qtype])
        .args(extra);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(15))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("dig {name} {qtype} failed: {text}"));
    }
    let mut dig = Dig::default();
    let mut section = "";
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            dig.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if line.starts_with(";; ") && line.ends_with("SECTION:") {
            section = line;
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let record: Vec<String> = line.split_whitespace().map(str::to_string).collect();
            match section {
                ";; ANSWER SECTION:" => dig.answer.push(record),
                ";; AUTHORITY SECTION:" => dig.authority.push(record),
                ";; ADDITIONAL SECTION:" => dig.additional.push(record),
                _ => {}
            }
        }
    }
    Ok(dig)
}

fn dig_ok(dns: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Dig {
    dig(dns, name, qtype, extra).unwrap_or_else(|e| panic!("{e}"))
}

fn dig_available() -> bool {
    if program_available("dig") {
        return true;
    }
    skip_or_fail("dig is not installed (apt-get install dnsutils)");
    false
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Starts `a` (answering DNS on a fresh port, metrics on another), then `b` and `c` joining it.
fn three_nodes() -> (Vec<Agent>, SocketAddr, SocketAddr) {
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = Agent::start(
        "a",
        &[
            "--dns",
            &dns.to_string(),
            "--metrics",
            &metrics.to_string(),
            "--tag",
            "role=web",
            "--tag",
            "dc=eu-west",
            "--tag",
            "port=8080",
        ],
    );
    let join = a.addr().to_string();
    let b = Agent::start(
        "b",
        &[
            "--tag",
            "role=web",
            "--tag",
            "dc=us",
            "--tag",
            "http_port=8081",
            "--join",
            &join,
        ],
    );
    let c = Agent::start(
        "c",
        &["--tag", "role=db", "--tag", "port=5432", "--join", &join],
    );
    let agents = vec![a, b, c];
    for agent in &agents {
        wait_for(CONVERGE, "every agent to list three members alive", || {
            let alive = agent
                .members()?
                .iter()
                .filter(|m| m.status == "alive")
                .count();
            (alive == 3)
                .then_some(())
                .ok_or(format!("{} sees {alive} alive", agent.name()))
        });
    }
    (agents, dns, metrics)
}

#[test]
fn dig_sees_nodes_tags_srv_and_negative_answers() {
    if !dig_available() {
        return;
    }
    let _slot = cluster_slot();
    let (_agents, dns, metrics) = three_nodes();

    let b = dig_ok(dns, "b.node.rumor", "A", &[]);
    assert_eq!(b.status, "NOERROR");
    assert!(b.flags.contains("aa"), "not authoritative: {b:?}");
    assert_eq!(b.answer_column(4), set(&["127.0.0.1"]));
    let txt = dig_ok(dns, "b.node.rumor", "TXT", &[]);
    assert_eq!(
        txt.answer_column(4),
        set(&["\"dc=us\" \"http_port=8081\" \"role=web\""])
    );

    // Tags: the service port tag (http_port) or else `port`; two pairs are an AND.
    let web = dig_ok(dns, "_http._tcp.web.role.tag.rumor", "SRV", &[]);
    assert_eq!(web.srv_targets(), set(&["a.node.rumor.", "b.node.rumor."]));
    assert_eq!(
        web.answer_column(6),
        set(&["8080 a.node.rumor.", "8081 b.node.rumor."])
    );
    let glue: BTreeSet<String> = web
        .additional
        .iter()
        .filter(|r| r[3] == "A")
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(glue, set(&["a.node.rumor.", "b.node.rumor."]));
    let both = dig_ok(dns, "_http._tcp.web.role.eu-west.dc.tag.rumor", "SRV", &[]);
    assert_eq!(both.srv_targets(), set(&["a.node.rumor."]));
    assert_eq!(dig_ok(dns, "web.role.tag.rumor", "A", &[]).answer.len(), 2);
    assert_eq!(dig_ok(dns, "DB.Role.Tag.Rumor", "A", &[]).answer.len(), 1);

    let nx = dig_ok(dns, "nobody.node.rumor", "A", &[]);
    assert_eq!(nx.status, "NXDOMAIN");
    assert_eq!(nx.authority.len(), 1, "{nx:?}");
    assert_eq!(
        (nx.authority[0][0].as_str(), nx.authority[0][3].as_str()),
        ("rumor.", "SOA")
    );
    let none = dig_ok(dns, "web.role.us.dc.db.role.tag.rumor", "A", &[]);
    assert_eq!(none.status, "NXDOMAIN");
    let other = dig_ok(dns, "example.com", "A", &[]);
    assert_eq!(other.status, "REFUSED");

    // Garbage is dropped and counted; the agent keeps answering.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for packet in [&b"hello"[..], &[0xff; 40], &[0u8; 12]] {
        socket.send_to(packet, dns).unwrap();
    }
    assert_eq!(dig_ok(dns, "a.node.rumor", "A", &[]).status, "NOERROR");
    let malformed = metric(metrics, "rumor_dns_malformed_total");
    assert!(malformed >= 2, "rumor_dns_malformed_total {malformed}");
    assert!(metric(metrics, "rumor_dns_responses_total{rcode=\"nxdomain\"}") >= 2);
}

/// One sample of the agent's `GET /metrics`.
fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
}

/// Whether node `name` is in every answer that should hold it: its node name and the SRV of
/// its role.
fn answered(dns: SocketAddr, name: &str) -> (bool, bool) {
    let node = dig_ok(dns, &format!("{name}.node.rumor"), "A", &[]);
    let srv = dig_ok(dns, "_http._tcp.web.role.tag.rumor", "SRV", &[]);
    (
        node.status == "NOERROR" && !node.answer.is_empty(),
        srv.srv_targets().contains(&format!("{name}.node.rumor.")),
    )
}

#[test]
fn a_failed_node_leaves_every_answer_within_a_second_of_members_showing_it() {
    if !dig_available() {
        return;
    }
    let _slot = cluster_slot();
    let (mut agents, dns, _) = three_nodes();
    assert_eq!(answered(dns, "b"), (true, true));
    agents[1].kill9();
    wait_for(CONVERGE, "a to list b as failed", || {
        let b = agents[0].members_named("b")?;
        (b.first().map(|m| m.status.as_str()) == Some("failed"))
            .then_some(())
            .ok_or(format!("b is {b:?}"))
    });
    // When the poll that found b gone was sent: the time `dig` itself takes to start on a
    // loaded machine is not the agent's.
    let shown = Instant::now();
    let gone = wait_for(Duration::from_secs(5), "b gone from every answer", || {
        let asked = shown.elapsed();
        match answered(dns, "b") {
            (false, false) => Ok(asked),
            other => Err(format!("b still answered: {other:?}")),
        }
    });
    assert!(
        gone < Duration::from_secs(1),
        "b left the answers {gone:?} after rumor members showed it failed"
    );
}

#[test]
fn a_critical_health_tag_removes_the_node_and_passing_brings_it_back() {
    if !dig_available() {
        return;
    }
    let _slot = cluster_slot();
    let (agents, dns, _) = three_nodes();
    assert_eq!(answered(dns, "b"), (true, true));
    agents[1].cli_ok(&["tags", "--set", "health_web=critical"]);
    wait_for(CONVERGE, "b out of a's answers", || {
        match answered(dns, "b") {
            (false, false) => Ok(()),
            other => Err(format!("b still answered: {other:?}")),
        }
    });
    assert_eq!(answered(dns, "a"), (true, true));
    agents[1].cli_ok(&["tags", "--set", "health_web=passing"]);
    wait_for(CONVERGE, "b back in a's answers", || {
        match answered(dns, "b") {
            (true, true) => Ok(()),
            other => Err(format!("b not answered: {other:?}")),
        }
    });
}

#[test]
fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    if !dig_available() {
        return;
    }
    let _slot = cluster_slot();
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // Eight tags of about 90 bytes: a TXT answer over 700 bytes, past UDP's classic 512.
    let tags: Vec<String> = (0..8)
        .map(|i| format!("note{i}={}", "x".repeat(80)))
        .collect();
    let mut args = vec!["--dns".to_string(), dns.to_string()];
    for t in &tags {
        args.extend(["--tag".to_string(), t.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _a = Agent::start("a", &args);

    let udp = dig_ok(dns, "a.node.rumor", "TXT", &["+noedns", "+ignore"]);
    assert!(udp.flags.contains("tc"), "no TC bit over UDP: {udp:?}");
    assert!(udp.answer.is_empty(), "a TXT record cut in half: {udp:?}");
    // Without +ignore dig retries over TCP on TC, as resolvers do.
    let retried = dig_ok(dns, "a.node.rumor", "TXT", &["+noedns"]);
    assert!(!retried.flags.contains("tc"));
    assert_eq!(retried.answer.len(), 1);
    let tcp = dig_ok(dns, "a.node.rumor", "TXT", &["+tcp"]);
    let text = tcp.answer[0][4..].join(" ");
    for t in &tags {
        assert!(text.contains(t.as_str()), "{t} missing over TCP: {text}");
    }
}

#[test]
fn a_health_check_going_critical_takes_its_node_out_of_dns_and_back() {
    if !dig_available() {
        return;
    }
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let flag = dir.path().join("serving");
    write_file(&flag, "");
    // `test -e` exits 0 (passing) while the file exists, 1 (warning: not passing) without it.
    let config = dir.path().join("rumor.toml");
    write_file(
        &config,
        &format!(
            "[[check]]\nname = \"web\"\ncommand = \"test -e {}\"\ninterval = \"300ms\"\n\
             timeout = \"300ms\"\nrise = 1\nfall = 1\n",
            flag.display()
        ),
    );
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = Agent::start(
        "a",
        &[
            "--dns",
            &dns.to_string(),
            "--tag",
            "role=web",
            "--tag",
            "port=80",
        ],
    );
    let join = a.addr().to_string();
    let config = config.to_string_lossy();
    let _b = Agent::start(
        "b",
        &[
            "--tag", "role=web", "--tag", "port=80", "--config", &config, "--join", &join,
        ],
    );
    let want = |node: &'static str, state: (bool, bool), what: &str| {
        wait_for(CONVERGE, what, || match answered(dns, node) {
            got if got == state => Ok(()),
            other => Err(format!("{node}: node name and SRV answered: {other:?}")),
        });
    };
    want("b", (true, true), "b's check passing and b in a's answers");
    std::fs::remove_file(&flag).expect("remove the flag");
    want(
        "b",
        (false, false),
        "b out of a's answers after its check fails",
    );
    // a has no checks: it stays.
    assert_eq!(answered(dns, "a"), (true, true));
    write_file(&flag, "");
    want(
        "b",
        (true, true),
        "b back in a's answers when its check passes",
    );
}
