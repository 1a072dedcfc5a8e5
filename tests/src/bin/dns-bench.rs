//! `dns-bench`: queries per second and latency of one agent's DNS interface with `dnsperf`,
//! next to nsd serving the same records from a zone file in the same run; event delivery with
//! and without that load; and the time from the agent marking a member failed to its name
//! answering NXDOMAIN.
//!
//! ```text
//! apt-get install dnsperf nsd
//! cargo run --release -p rumor-tests --bin dns-bench -- [--nodes 50] [--secs 10] [--rounds 5]
//! ```
//!
//! Everything runs on loopback. Each agent binds its own address (127.0.2.1, 127.0.2.2, ...)
//! so every member has a distinct A record, as it would on a real network; the first agent
//! answers DNS. All are tagged `role=web`, `port=8080`. nsd (one server process, like the
//! agent's one DNS task) serves the same names with the same records from a zone file.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use rumor_tests::bench::host::{machine, release_rumor};
use rumor_tests::services::{ChildProcess, program_available};
use rumor_tests::{run_with_timeout, test_tempdir, wait_for};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "dns-bench")]
struct Args {
    /// Members in the cluster (the DNS agent included).
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Seconds of each dnsperf run.
    #[arg(long, default_value_t = 10)]
    secs: u32,
    /// Events timed with and without load, and members failed one by one.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The steady query rate (dnsperf -Q) events are also timed under.
    #[arg(long, default_value_t = 5000)]
    steady_qps: u32,
}

const GOSSIP_PORT: u16 = 7946;
const DNS_PORT: u16 = 8600;
const NSD_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 1);

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("dns-bench: {e:#}");
        std::process::exit(1);
    }
}

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, 1 + i as u8)
}

struct Cluster {
    bin: PathBuf,
    dirs: Vec<PathBuf>,
    agents: Vec<ChildProcess>,
}

impl Cluster {
    fn start(bin: PathBuf, root: &Path, n: usize) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster {
            bin,
            dirs: Vec::new(),
            agents: Vec::new(),
        };
        for i in 0..n {
            let dir = root.join(format!("n{i}"));
            std::fs::create_dir_all(&dir)?;
            let mut cmd = Command::new(&cluster.bin);
            cmd.arg("agent")
                .args(["--node", &format!("n{i}")])
                .args([
                    "--bind",
                    &SocketAddr::from((ip(i), GOSSIP_PORT)).to_string(),
                ])
                .arg("--data-dir")
                .arg(&dir)
                .args(["--profile", "lan", "--log-level", "warn"])
                .args(["--tag", "role=web", "--tag", "port=8080"]);
            if i == 0 {
                cmd.args(["--dns", &SocketAddr::from((ip(0), DNS_PORT)).to_string()]);
            } else {
                cmd.args([
                    "--join",
                    &SocketAddr::from((ip(0), GOSSIP_PORT)).to_string(),
                ]);
            }
            cluster
                .agents
                .push(ChildProcess::spawn(&format!("n{i}"), &mut cmd));
            cluster.dirs.push(dir);
            if i == 0 {
                wait_for(Duration::from_secs(20), "n0 to answer", || {
                    cluster.cli(0, &["info"]).map(drop)
                });
            }
        }
        wait_for(Duration::from_secs(60), "every member alive on n0", || {
            let alive = cluster
                .members(0)?
                .iter()
                .filter(|m| m["status"] == "alive")
                .count();
            (alive == n).then_some(()).ok_or(format!("{alive} alive"))
        });
        Ok(cluster)
    }

    fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .arg("--control")
            .arg(self.dirs[i].join("control.sock"));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn members(&self, i: usize) -> Result<Vec<Value>, String> {
        let out = self.cli(i, &["members", "--format", "json"])?;
        let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(v["members"].as_array().cloned().unwrap_or_default())
    }

    /// Sends event `name` from agent `from`; the time from the sender holding it (its own
    /// record of the event, so the CLI's start is not counted) until the last agent received it.
    fn delivery(&self, from: usize, name: &str) -> anyhow::Result<Duration> {
        self.cli(from, &["event", "--coalesce=false", name])
            .map_err(anyhow::Error::msg)?;
        let received: Vec<u64> = (0..self.agents.len())
            .map(|i| {
                wait_for(Duration::from_secs(10), "the event on every agent", || {
                    let out = self.cli(i, &["events", "--format", "json"])?;
                    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
                    v["events"]
                        .as_array()
                        .and_then(|es| es.iter().find(|e| e["name"] == name))
                        .and_then(|e| e["received_unix_ns"].as_u64())
                        .ok_or(format!("n{i} has not received {name}"))
                })
            })
            .collect();
        let last = received.iter().max().copied().unwrap_or(0);
        Ok(Duration::from_nanos(last.saturating_sub(received[from])))
    }
}

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A query for `name` type A, by hand (the benchmark needs nothing more).
fn query_packet(id: u16, name: &str) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.extend_from_slice(&[0, 0, 1, 0, 1]);
    p
}

/// The response code of the answer to `name` (0 NOERROR, 3 NXDOMAIN).
fn rcode(socket: &UdpSocket, server: SocketAddr, name: &str) -> anyhow::Result<u8> {
    socket.send_to(&query_packet(1, name), server)?;
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf)?;
    anyhow::ensure!(len >= 12, "short answer");
    Ok(buf[3] & 0x0f)
}

/// The zone nsd serves: what the agent answers for the same cluster.
fn zone_file(n: usize) -> String {
    let mut z = String::from(
        "$ORIGIN rumor.\n$TTL 0\n@ SOA n0.node.rumor. hostmaster.rumor. 1 3600 600 86400 0\n\
         @ NS n0.node.rumor.\n",
    );
    for i in 0..n {
        z.push_str(&format!(
            "n{i}.node A {}\nn{i}.node TXT \"port=8080\" \"role=web\"\nweb.role.tag A {}\n\
             _http._tcp.web.role.tag SRV 1 1 8080 n{i}.node.rumor.\n",
            ip(i),
            ip(i)
        ));
    }
    z
}

fn start_nsd(dir: &Path, n: usize) -> anyhow::Result<ChildProcess> {
    std::fs::write(dir.join("rumor.zone"), zone_file(n))?;
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: {NSD_ADDR}\n  port: {DNS_PORT}\n  server-count: 1\n  \
         username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  \
         database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         verbosity: 0\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: rumor\n  \
         zonefile: \"{d}/rumor.zone\"\n"
    );
    std::fs::write(dir.join("nsd.conf"), conf)?;
    let mut cmd = Command::new("nsd");
    cmd.arg("-d").arg("-c").arg(dir.join("nsd.conf"));
    let nsd = ChildProcess::spawn("nsd", &mut cmd);
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    wait_for(Duration::from_secs(20), "nsd to answer", || {
        rcode(&socket, (NSD_ADDR, DNS_PORT).into(), "n0.node.rumor.")
            .map_err(|e| e.to_string())
            .and_then(|c| (c == 0).then_some(()).ok_or(format!("rcode {c}")))
    });
    Ok(nsd)
}

/// The query mix: every node's A, a tenth of them TXT, the tag's A and SRV, and names that do
/// not exist.
fn query_file(dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let mut q = String::new();
    for i in 0..n {
        q.push_str(&format!("n{i}.node.rumor A\n"));
        if i % 10 == 0 {
            q.push_str(&format!("n{i}.node.rumor TXT\nweb.role.tag.rumor A\n"));
            q.push_str("_http._tcp.web.role.tag.rumor SRV\nnobody.node.rumor A\n");
        }
    }
    let path = dir.join("queries.txt");
    std::fs::write(&path, q)?;
    Ok(path)
}

struct Perf {
    qps: f64,
    avg_ms: f64,
    lost: String,
}

/// dnsperf for `secs`, as fast as it goes or at `rate` queries per second.
fn dnsperf(
    server: SocketAddr,
    queries: &Path,
    secs: u32,
    rate: Option<u32>,
) -> anyhow::Result<Perf> {
    let mut cmd = Command::new("dnsperf");
    cmd.args([
        "-s",
        &server.ip().to_string(),
        "-p",
        &server.port().to_string(),
    ])
    .arg("-d")
    .arg(queries)
    .args(["-l", &secs.to_string()]);
    if let Some(rate) = rate {
        cmd.args(["-Q", &rate.to_string()]);
    }
    let out = run_with_timeout(&mut cmd, Duration::from_secs(u64::from(secs) + 30))
        .map_err(anyhow::Error::msg)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(label)
                    .map(str::trim)
                    .map(str::to_string)
            })
            .with_context(|| format!("no {label:?} in dnsperf's output:\n{text}"))
    };
    let qps: f64 = field("Queries per second:")?.parse()?;
    let avg: f64 = field("Average Latency (s):")?
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()?;
    Ok(Perf {
        qps,
        avg_ms: avg * 1000.0,
        lost: field("Queries lost:")?,
    })
}

fn median_max(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.1} / {:.1} ms",
        ms(v[v.len() / 2]),
        ms(*v.last().unwrap())
    )
}

fn run(args: Args) -> anyhow::Result<()> {
    for tool in ["dnsperf", "nsd"] {
        if !program_available(tool) {
            bail!("{tool} is not installed (apt-get install dnsperf nsd)");
        }
    }
    anyhow::ensure!(args.nodes >= 2 && args.nodes <= 200, "--nodes: 2..=200");
    let bin = release_rumor()?;
    let tmp = test_tempdir();
    println!("machine: {}", machine());
    let mut cluster = Cluster::start(bin, tmp.path(), args.nodes)?;
    let nsd_dir = tmp.path().join("nsd");
    std::fs::create_dir_all(&nsd_dir)?;
    let _nsd = start_nsd(&nsd_dir, args.nodes)?;
    let queries = query_file(tmp.path(), args.nodes)?;
    let agent_dns = SocketAddr::from((ip(0), DNS_PORT));

    let idle: Vec<Duration> = (0..args.rounds)
        .map(|r| cluster.delivery(1 + r % (args.nodes - 1), &format!("idle{r}")))
        .collect::<anyhow::Result<_>>()?;

    // nsd, then the agent, each as fast as dnsperf goes; then the agent at a steady rate and
    // at full speed again, with events timed under each.
    let nsd = dnsperf((NSD_ADDR, DNS_PORT).into(), &queries, args.secs, None)?;
    let agent = dnsperf(agent_dns, &queries, args.secs, None)?;
    let timed_under = |rate: Option<u32>, tag: &str| {
        std::thread::scope(|s| {
            let perf = s.spawn(|| dnsperf(agent_dns, &queries, args.secs, rate));
            // Let dnsperf reach its rate before timing events under it.
            std::thread::sleep(Duration::from_secs(1));
            let loaded: anyhow::Result<Vec<Duration>> = (0..args.rounds)
                .map(|r| cluster.delivery(1 + r % (args.nodes - 1), &format!("{tag}{r}")))
                .collect();
            (perf.join().expect("dnsperf thread"), loaded)
        })
    };
    let (steady, steady_delivery) = timed_under(Some(args.steady_qps), "steady");
    let (_, full_delivery) = timed_under(None, "full");
    let (steady, steady_delivery, full_delivery) = (steady?, steady_delivery?, full_delivery?);

    println!(
        "\n{} members, dnsperf -l {} on loopback, same query mix",
        args.nodes, args.secs
    );
    println!("| | rumor agent | nsd (server-count 1) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| queries/s | {:.0} | {:.0} | {:.0} % |",
        agent.qps,
        nsd.qps,
        100.0 * agent.qps / nsd.qps
    );
    println!(
        "| average latency | {:.3} ms | {:.3} ms | |",
        agent.avg_ms, nsd.avg_ms
    );
    println!("| queries lost | {} | {} | |", agent.lost, nsd.lost);
    println!(
        "\nevent delivery to all {} members, median / max of {}: idle {}; under {:.0} queries/s \
         (lost {}) {}; under dnsperf at full speed {}",
        args.nodes,
        args.rounds,
        median_max(idle),
        steady.qps,
        steady.lost,
        median_max(steady_delivery),
        median_max(full_delivery)
    );

    // Failures: kill -9 one member at a time; from n0 marking it failed (its status_since_ms)
    // to its name answering NXDOMAIN, polled every millisecond.
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut gaps = Vec::new();
    for r in 0..args.rounds.min(args.nodes - 1) {
        let victim = args.nodes - 1 - r;
        let name = format!("n{victim}.node.rumor.");
        cluster.agents[victim].kill9();
        let started = Instant::now();
        let gone_ms = loop {
            if rcode(&socket, agent_dns, &name)? == 3 {
                break unix_ns() / 1_000_000;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{name} still answered a minute after kill -9");
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let members = cluster.members(0).map_err(anyhow::Error::msg)?;
        let failed_ms = members
            .iter()
            .find(|m| m["name"] == format!("n{victim}"))
            .filter(|m| m["status"] == "failed")
            .and_then(|m| m["status_since_ms"].as_i64())
            .with_context(|| format!("n{victim} is not failed on n0"))?;
        gaps.push(gone_ms as i64 - failed_ms);
    }
    println!(
        "marked failed → NXDOMAIN (ms, one per member killed): {gaps:?} (kill -9 → detected: SWIM's own time, see Failure detection)"
    );
    Ok(())
}
