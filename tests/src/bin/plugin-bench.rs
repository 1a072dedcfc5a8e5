//! `plugin-bench`: how fast the haproxy plugin makes a real haproxy follow the cluster, and
//! how many renders and reloads a burst of joins costs, next to a hand-written Serf-style
//! handler script doing the same job.
//!
//! ```text
//! cargo run --release -p rumor-tests --bin plugin-bench -- [--joins 20] [--rounds 5] [--wait 100ms]
//! ```
//!
//! Needs haproxy and socat. Everything runs on 127.0.0.1: a haproxy in master-worker mode, a
//! load-balancer agent, and web nodes (a `web-backend` process and an agent each).
//!
//! * **Member change → serving**: a web node joins; from the moment the load balancer's agent
//!   reports the member-join (`rumor monitor`) until a request through haproxy is answered by
//!   the new node. `--rounds` joins, one at a time.
//! * **Burst**: `--joins` web nodes that already form a cluster of their own join the load
//!   balancer's in one exchange: renders and reloads it costs, and the time until haproxy
//!   serves all of them.
//!
//! Both for the plugin and for the script (`--event-handler` running `/bin/sh` that rebuilds
//! the config from `rumor members`, checks it and reloads haproxy, as Serf users write them).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rumor_tests::bench::host;
use rumor_tests::services::{Haproxy, WebNode, http_get, program_available};
use rumor_tests::{Agent, member_event_names, test_tempdir, write_file};

#[derive(Debug, Parser)]
#[command(name = "plugin-bench")]
struct Args {
    /// Web nodes in the burst.
    #[arg(long, default_value_t = 20)]
    joins: usize,
    /// Single joins timed.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The plugin's quiescence (its `wait` setting); `0s` for none.
    #[arg(long, default_value = "100ms")]
    wait: String,
    /// Only the plugin (no script).
    #[arg(long)]
    plugin_only: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("plugin-bench: {e:#}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Plugin,
    Script,
}

struct Figures {
    join_ms: Vec<f64>,
    burst_renders: u64,
    burst_reloads: u64,
    burst_serving_ms: f64,
}

fn run(args: Args) -> anyhow::Result<()> {
    for program in ["haproxy", "socat"] {
        if !program_available(program) {
            bail!("{program} is not on the PATH (apt-get install {program})");
        }
    }
    host::catch_interrupts();
    let bin = host::release_rumor()?;
    // SAFETY: set before any thread starts; the harness reads it to find the binary.
    unsafe { std::env::set_var("RUMOR_BIN", &bin) };
    let web_bin = std::env::current_exe()?
        .parent()
        .context("no directory of the benchmark's binary")?
        .join("web-backend");
    if !web_bin.is_file() {
        bail!(
            "{} is missing: cargo build --release -p rumor-tests --bins",
            web_bin.display()
        );
    }
    println!("{}", host::machine());
    let mut flavors = vec![Flavor::Plugin];
    if !args.plugin_only {
        flavors.push(Flavor::Script);
    }
    for flavor in flavors {
        let f = measure(flavor, &args, &web_bin)?;
        let mut sorted = f.join_ms.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "{:<7} join→serving ms: median {:.0}, max {:.0} ({} joins) | burst of {}: {} renders, {} reloads, all served after {:.0} ms",
            match flavor {
                Flavor::Plugin => format!("plugin (wait {})", args.wait),
                Flavor::Script => "script".to_string(),
            },
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
            sorted.len(),
            args.joins,
            f.burst_renders,
            f.burst_reloads,
            f.burst_serving_ms,
        );
    }
    Ok(())
}

fn measure(flavor: Flavor, args: &Args, web_bin: &Path) -> anyhow::Result<Figures> {
    let dir = test_tempdir();
    let haproxy = Haproxy::start(dir.path());
    let (config, socket, frontend) = (&haproxy.config, &haproxy.master_socket, haproxy.frontend);
    let runs = dir.path().join("script-runs.log");
    let lb = match flavor {
        Flavor::Plugin => {
            let lb = Agent::start("lb", &["--tag", "role=lb"]);
            let wait_max = if args.wait == "0s" { "0s" } else { "2s" };
            haproxy.install_plugin(
                &lb,
                &[
                    &format!("wait={}", args.wait),
                    &format!("wait_max={wait_max}"),
                ],
            );
            lb
        }
        Flavor::Script => {
            let head_file = dir.path().join("head.cfg");
            write_file(&head_file, &Haproxy::initial_config(frontend));
            let script = dir.path().join("update-lb.sh");
            write_file(&script, &serf_style_script());
            // The script asks the agent for its members, as a Serf script calls `serf
            // members`; where the agent's socket is, it reads from a file written once the
            // agent runs.
            let control_file = dir.path().join("control-path");
            let handler = format!(
                "member-join,member-leave,member-failed=sh {} {} {} {} {} {}",
                script.display(),
                head_file.display(),
                config.display(),
                socket.display(),
                runs.display(),
                control_file.display()
            );
            let lb = Agent::start("lb", &["--tag", "role=lb", "--event-handler", &handler]);
            write_file(&control_file, &lb.control_path().display().to_string());
            lb
        }
    };
    let reloads = || haproxy.reloads().map(|(r, _)| r).unwrap_or(0);
    host::sleep(Duration::from_millis(500))?;

    // Single joins, timed from the load balancer's report of each (its monitor, subscribed
    // first: a warm-up event shows it is).
    let monitor = lb.monitor();
    let mut polls = 0;
    rumor_tests::wait_for(
        Duration::from_secs(20),
        "the monitor to be subscribed",
        || {
            polls += 1;
            if polls % 4 == 1 {
                lb.cli_ok(&["event", &format!("warmup-{polls}")]);
            }
            (monitor.count(|l| rumor_tests::is_user_event_prefixed(l, "warmup-")) > 0)
                .then_some(())
                .ok_or("no warm-up event yet".to_string())
        },
    );
    let mut webs: Vec<WebNode> = Vec::new();
    let mut join_ms = Vec::new();
    for i in 1..=args.rounds {
        host::check_interrupt()?;
        let name = format!("web-{i}");
        let node = WebNode::start(web_bin, &name, &lb, &[]);
        let served = first_answer_from(frontend, &name, Duration::from_secs(30))?;
        monitor.wait_for(Duration::from_secs(10), "the join in the monitor", |l| {
            member_event_names(l, "join").contains(&name)
        });
        let learned = monitor
            .first(|l| member_event_names(l, "join").contains(&name))
            .map(|(at, _)| at)
            .context("the load balancer's monitor did not report the join")?;
        join_ms.push(served.saturating_duration_since(learned).as_secs_f64() * 1000.0);
        webs.push(node);
    }

    // The burst: a side cluster joins in one exchange.
    let side = Agent::start("side", &[]);
    let mut burst = Vec::new();
    let mut names = BTreeSet::new();
    for i in 1..=args.joins {
        host::check_interrupt()?;
        let name = format!("burst-{i}");
        let node = WebNode::start(web_bin, &name, &side, &[]);
        names.insert(name);
        burst.push(node);
    }
    rumor_tests::wait_for(Duration::from_secs(60), "the side cluster", || {
        let n = side.members()?.len();
        (n == args.joins + 1).then_some(()).ok_or(format!("{n}"))
    });
    host::sleep(Duration::from_secs(2))?;
    let renders_before = renders(flavor, &lb, &runs);
    let reloads_before = reloads();
    let start = Instant::now();
    lb.cli_ok(&["join", &side.addr().to_string()]);
    let deadline = start + Duration::from_secs(60);
    let mut seen = BTreeSet::new();
    while seen.len() < names.len() {
        if Instant::now() > deadline {
            bail!(
                "haproxy did not serve all {} burst members: {seen:?}",
                names.len()
            );
        }
        if let Ok(body) = http_get(frontend)
            && names.contains(&body)
        {
            seen.insert(body);
        }
    }
    let burst_serving_ms = start.elapsed().as_secs_f64() * 1000.0;
    // Let late runs finish before counting.
    host::sleep(Duration::from_secs(3))?;
    let figures = Figures {
        join_ms,
        burst_renders: renders(flavor, &lb, &runs) - renders_before,
        burst_reloads: reloads() - reloads_before,
        burst_serving_ms,
    };
    drop(burst);
    drop(webs);
    drop(haproxy);
    Ok(figures)
}

/// Renders so far: the template's count, or the script's runs.
fn renders(flavor: Flavor, lb: &Agent, runs: &Path) -> u64 {
    match flavor {
        Flavor::Plugin => {
            let info = lb.info().unwrap_or_default();
            info["handlers"]
                .as_array()
                .and_then(|hs| hs.iter().find(|h| h["name"] == "haproxy/config"))
                .and_then(|h| h["runtime"]["renders"].as_u64())
                .unwrap_or(0)
        }
        Flavor::Script => std::fs::read_to_string(runs)
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0),
    }
}

/// Polls the frontend until `name` answers; when it did.
fn first_answer_from(frontend: SocketAddr, name: &str, limit: Duration) -> anyhow::Result<Instant> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if http_get(frontend).is_ok_and(|b| b == name) {
            return Ok(Instant::now());
        }
    }
    bail!("haproxy never answered from {name}")
}

/// The handler a Serf user writes: rebuild the backend from the member list, check, swap,
/// reload through the master socket. Arguments: HEAD CONFIG SOCKET RUNS-LOG CONTROL-FILE.
fn serf_style_script() -> String {
    let rumor: PathBuf = rumor_tests::rumor_bin().to_path_buf();
    format!(
        r#"#!/bin/sh
head=$1; cfg=$2; sock=$3; runs=$4; control=$(cat "$5")
echo run >> "$runs"
{{
  cat "$head"
  {rumor} members --status alive --tag role=web --control "$control" |
    awk '{{ split($2, a, ":"); n = split($4, t, ","); p = 80
           for (i = 1; i <= n; i++) {{ split(t[i], kv, "="); if (kv[1] == "port") p = kv[2] }}
           print "    server " $1 " " a[1] ":" p " check" }}'
}} > "$cfg.new" && haproxy -c -q -f "$cfg.new" && mv "$cfg.new" "$cfg" &&
  echo reload | socat -t 2 - "UNIX-CONNECT:$sock" >/dev/null
"#,
        rumor = rumor.display()
    )
}
