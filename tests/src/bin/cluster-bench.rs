//! `cluster-bench`: measures a cluster of real agents on this machine, or simulates a large one.
//!
//! ```text
//! cargo run --release -p rumor-tests --bin cluster-bench -- --nodes 50 [--serf] [--json]
//! cargo run --release -p rumor-tests --bin cluster-bench -- --sim 10000 [--loss 0.1] [--json]
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use rumor::cluster::Profile;
use rumor::cluster::sim::{SimParams, SimReport, simulate};
use rumor_tests::bench::agents::{Agents, Flavor};
use rumor_tests::bench::measure::{self, JoinMode, Plan};
use rumor_tests::bench::{host, report};

/// Benchmark a rumor cluster: N real agents on 127.0.0.1 (optionally the same with HashiCorp
/// Serf, side by side), or an in-process simulation of N nodes.
#[derive(Debug, Parser)]
#[command(name = "cluster-bench")]
struct Args {
    /// Start this many real agents on 127.0.0.1 and measure them.
    #[arg(long, value_name = "N", required_unless_present = "sim")]
    nodes: Option<usize>,
    /// Timing profile of the agents (lan, wan, local), for rumor and Serf alike.
    #[arg(long, default_value = "lan")]
    profile: Profile,
    /// Also measure `serf agent` processes (needs `serf` on the PATH), in the same session.
    #[arg(long)]
    serf: bool,
    /// Only measure Serf (with --nodes).
    #[arg(long, conflicts_with = "serf")]
    serf_only: bool,
    /// How the cluster forms before the measurements.
    #[arg(long, value_enum, default_value = "seed-joins-all")]
    join: JoinMode,
    /// User events sent (each after a handler floor measurement).
    #[arg(long, default_value_t = 5)]
    events: usize,
    /// Queries sent.
    #[arg(long, default_value_t = 3)]
    queries: usize,
    /// Idle window for CPU and traffic, seconds (30 s spans one push-pull period of `lan`).
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// An extra argument for every `rumor agent` (repeatable), e.g.
    /// `--agent-arg=--priority-boost=10` to compare a setting against the defaults.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    agent_arg: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Simulate this many nodes in-process (no agents, no I/O).
    #[arg(long, value_name = "N", conflicts_with = "nodes")]
    sim: Option<usize>,
    /// Simulation: probability that a packet is lost (0–1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Simulation: seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulation: peers each node knows [default: all up to 2,000 nodes, else 500].
    #[arg(long)]
    view: Option<usize>,
    /// Simulation: one-way latency range in ms, uniform.
    #[arg(long, default_value = "0.2-1", value_parser = parse_range)]
    latency_ms: (f64, f64),
    /// Simulation: simulated seconds after the event that are counted.
    #[arg(long, default_value_t = 5.0)]
    horizon_s: f64,
    /// Simulation: user events sent by other nodes before the measured one (they shape the
    /// broadcast tree; 0 measures a cluster's first event).
    #[arg(long, default_value_t = 3)]
    warmup_events: usize,
}

fn parse_range(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: f64 = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let b: f64 = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if a < 0.0 || b < a {
        return Err(format!("{s:?} is not a range like 0.2-1"));
    }
    Ok((a, b))
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("cluster-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(n) = args.sim {
        return run_sim(&args, n);
    }
    let n = args.nodes.context("--nodes N or --sim N")?;
    if n < 2 {
        bail!("--nodes must be at least 2");
    }
    host::catch_interrupts();
    let mut flavors = Vec::new();
    if !args.serf_only {
        flavors.push(Flavor::Rumor {
            bin: host::release_rumor()?,
            agent_args: args.agent_arg.clone(),
        });
    }
    if args.serf || args.serf_only {
        let bin = host::find_serf()
            .context("--serf: no `serf` on the PATH (Debian: apt-get install serf)")?;
        flavors.push(Flavor::Serf { bin });
    }
    let plan = Plan {
        events: args.events.max(1),
        queries: args.queries.max(1),
        idle: Duration::from_secs(args.idle_secs.max(1)),
        verbose: !args.json,
        join: args.join,
    };
    let mut results = Vec::new();
    for flavor in flavors {
        let label = flavor.label();
        eprintln!(
            "[{label}] starting {n} agents (profile {})",
            args.profile.as_str()
        );
        let agents = Agents::start(flavor, n, args.profile.as_str())?;
        let figures = measure::run(agents, &plan).context(label)?;
        results.push((label, figures));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&results))?);
    } else {
        print!("{}", report::text(&results, n, &host::machine()));
    }
    Ok(())
}

fn run_sim(args: &Args, n: usize) -> anyhow::Result<()> {
    if n < 2 {
        bail!("--sim needs at least 2 nodes");
    }
    if !(0.0..=1.0).contains(&args.loss) {
        bail!("--loss must be between 0 and 1");
    }
    let view = args.view.or((n > 2000).then_some(500));
    let ms = |x: f64| Duration::from_secs_f64(x / 1e3);
    let params = SimParams {
        nodes: n,
        seed: args.seed,
        loss: args.loss,
        latency: (ms(args.latency_ms.0), ms(args.latency_ms.1)),
        profile: args.profile,
        view,
        horizon: Duration::from_secs_f64(args.horizon_s),
        warmup_events: args.warmup_events,
        ..SimParams::default()
    };
    let r = simulate(params);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", sim_text(&r, args));
    }
    Ok(())
}

fn sim_text(r: &SimReport, args: &Args) -> String {
    let ms = |v: Option<f64>| v.map_or("never".into(), |v| format!("{v:.1} ms"));
    let opt = |v: Option<u32>| v.map_or("-".into(), |v| v.to_string());
    format!(
        "simulation: {} nodes (each knowing {} peers{}), {:.0} % loss, latency {}-{} ms, profile {}, seed {}, {} events before\n\
         received by {} of {}\n\
         reached 50 %: {}   99 %: {}   99.9 %: {}   100 %: {}\n\
         hops: median {}, max {}\n\
         packets per node: {:.2} carried the event, {} extra because of it, {:.1} in all over {} s\n\
         foca max_transmissions {}; wall time {:.1} s\n",
        r.nodes,
        r.view,
        if r.probes { "" } else { "; probes off" },
        r.loss * 100.0,
        args.latency_ms.0,
        args.latency_ms.1,
        args.profile.as_str(),
        args.seed,
        r.warmup_events,
        r.received,
        r.nodes,
        ms(r.reached_50_ms),
        ms(r.reached_99_ms),
        ms(r.reached_99_9_ms),
        ms(r.reached_100_ms),
        opt(r.hops_p50),
        opt(r.hops_max),
        r.event_packets_per_node,
        r.extra_packets_per_node
            .map_or("-".into(), |v| format!("{v:.2}")),
        r.packets_per_node,
        args.horizon_s,
        r.max_transmissions,
        r.wall_s
    )
}
