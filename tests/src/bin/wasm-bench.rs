//! `wasm-bench`: a WASM handler against a shell handler doing the same job, in a cluster of
//! real agents, and an agent's memory with ten modules loaded.
//!
//! ```text
//! cargo run -p rumor-tests --bin wasm-bench -- [--agents 50] [--rounds 10]
//! ```
//!
//! Every agent (release build) has two pairs of handlers: `user:bench` appends `date +%s%N` to
//! a file and `query:bench` answers `echo ok` (shell, as in the cluster benchmark), and
//! `user:wbench` appends the time to a file from a WASM module (tests/fixtures/wasm/stamp.wat)
//! and `query:wbench` answers `ok` from one (ok.wat). For each flavour, `--rounds` times:
//!
//! * **event → every handler ran**: from sending the event until the last of the agents'
//!   handlers wrote its time (the handlers' own clock);
//! * **query**: until the CLI printed every answer;
//! * **agent CPU per run**: the agents' own CPU time over the rounds (the gossip of the event
//!   included), divided by the runs; for the shell also with its processes' CPU.
//!
//! Then one agent with ten WASM handlers on ten different module files: its resident memory
//! before any runs, and after each module was compiled and run once.
//!
//! The per-run cost inside one process, without gossip, is the `wasm_run_cost` example of
//! rumor-handlers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rumor_tests::bench::agents::{Agents, Flavor};
use rumor_tests::bench::host::{self, cpu_time, rss_mb, stat_fields, unix_ns};
use rumor_tests::bench::report::{max, median};

#[derive(Debug, Parser)]
#[command(name = "wasm-bench")]
struct Args {
    #[arg(long, default_value_t = 50)]
    agents: usize,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Only the memory of one agent with ten modules.
    #[arg(long)]
    memory_only: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("wasm-bench: {e:#}");
        std::process::exit(1);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/wasm")
        .join(format!("{name}.wat"))
}

fn run(args: Args) -> anyhow::Result<()> {
    host::catch_interrupts();
    let bin = host::release_rumor()?;
    let work = tempfile::tempdir()?;
    let wasm_stamps = work.path().join("wasm-stamps");
    std::fs::create_dir_all(&wasm_stamps)?;
    let config = work.path().join("wasm.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[handler]]
name = "wstamp"
events = ["user:wbench"]
wasm = "{stamp}"
dirs = [{{ host = "{dir}", guest = "/stamps", writable = true }}]

[[handler]]
name = "wok"
events = ["query:wbench"]
wasm = "{ok}"
"#,
            stamp = fixture("stamp").display(),
            ok = fixture("ok").display(),
            dir = wasm_stamps.display()
        ),
    )?;
    println!("machine: {}", host::machine());
    if args.memory_only {
        return ten_modules(&bin, work.path());
    }
    let agents = Agents::start(
        Flavor::Rumor {
            bin: bin.clone(),
            agent_args: vec!["--config".into(), config.display().to_string()],
        },
        args.agents,
        "local",
    )?;
    agents.join_each_to_first()?;
    wait_converged(&agents)?;

    for (label, event, stamps) in [
        ("wasm", "wbench", Stamps::File(wasm_stamps.join("stamps"))),
        (
            "shell",
            "bench",
            Stamps::Dir(agents.stamps_dir().to_path_buf()),
        ),
    ] {
        let pids: Vec<u32> = (0..agents.len()).filter_map(|i| agents.pid(i)).collect();
        let cpu_before = cpu_of(&pids);
        let mut event_ms = Vec::new();
        let mut query_ms = Vec::new();
        for round in 0..args.rounds {
            host::check_interrupt()?;
            let sent = unix_ns();
            agents.send_event(round % agents.len(), event)?;
            let want = agents.len() * (round + 1);
            let deadline = Instant::now() + Duration::from_secs(30);
            let last = loop {
                let times = stamps.read();
                if times.len() >= want {
                    break times.into_iter().max().unwrap_or(sent);
                }
                if Instant::now() > deadline {
                    bail!("{label}: {} of {want} handler runs after 30 s", times.len());
                }
                host::sleep(Duration::from_millis(2))?;
            };
            event_ms.push((last - sent) as f64 / 1e6);
            let timing = agents.query(round % agents.len(), event, agents.len())?;
            let answered = timing
                .all_answered
                .with_context(|| format!("{label}: {} answers", timing.answers))?;
            query_ms.push(answered.as_secs_f64() * 1e3);
        }
        let cpu_after = cpu_of(&pids);
        // Each round is one event run and one query run on every agent.
        let runs = (2 * args.rounds * agents.len()) as f64;
        let own_us = (cpu_after.0 - cpu_before.0).as_secs_f64() * 1e6 / runs;
        let children_us = (cpu_after.1 - cpu_before.1).as_secs_f64() * 1e6 / runs;
        println!(
            "{label:<5} {} agents, {} rounds: event → all ran median {:.1} ms (max {:.1}); \
             query answered by all median {:.1} ms (max {:.1}); agent CPU per run {own_us:.0} µs \
             (+{children_us:.0} µs in handler processes)",
            agents.len(),
            args.rounds,
            median(&event_ms).unwrap_or(0.0),
            max(&event_ms).unwrap_or(0.0),
            median(&query_ms).unwrap_or(0.0),
            max(&query_ms).unwrap_or(0.0),
        );
    }
    drop(agents);
    ten_modules(&bin, work.path())
}

/// Where a flavour's handlers write their times: one shared file, or a file per node.
enum Stamps {
    File(PathBuf),
    Dir(PathBuf),
}

impl Stamps {
    fn read(&self) -> Vec<i128> {
        let texts: Vec<String> = match self {
            Stamps::File(path) => vec![std::fs::read_to_string(path).unwrap_or_default()],
            Stamps::Dir(dir) => std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                        .collect()
                })
                .unwrap_or_default(),
        };
        texts
            .iter()
            .flat_map(|t| t.lines())
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// The agents' own CPU time, and the CPU time of their reaped children, summed.
fn cpu_of(pids: &[u32]) -> (Duration, Duration) {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut own = Duration::ZERO;
    let mut children = Duration::ZERO;
    for pid in pids {
        own += cpu_time(*pid).unwrap_or_default();
        if let Some(f) = stat_fields(&format!("/proc/{pid}/stat")) {
            let field = |k: usize| {
                f.get(k - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            children += Duration::from_secs_f64((field(16) + field(17)) as f64 / ticks);
        }
    }
    (own, children)
}

fn wait_converged(agents: &Agents) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..agents.len() {
        loop {
            let alive = agents
                .members(i)?
                .iter()
                .filter(|(_, s)| s == "alive")
                .count();
            if alive == agents.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!("agent {i} sees {alive} of {} alive", agents.len());
            }
            host::sleep(Duration::from_millis(100))?;
        }
    }
    Ok(())
}

/// One agent with ten WASM handlers, each on its own module file.
fn ten_modules(bin: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut config = String::new();
    for i in 0..10 {
        let module = dir.join(format!("module-{i}.wat"));
        // Ten different files: a comment makes each its own module in the cache.
        let text = std::fs::read_to_string(fixture("ok"))?;
        std::fs::write(&module, format!(";; copy {i}\n{text}"))?;
        config.push_str(&format!(
            "[[handler]]\nname = \"m{i}\"\nevents = [\"query:ten\"]\nwasm = \"{}\"\n\n",
            module.display()
        ));
    }
    let bare = Agents::start(
        Flavor::Rumor {
            bin: bin.to_path_buf(),
            agent_args: Vec::new(),
        },
        1,
        "local",
    )?;
    let bare_rss = rss_mb(bare.pid(0).context("the agent is gone")?).unwrap_or(0.0);
    drop(bare);
    let path = dir.join("ten.toml");
    std::fs::write(&path, config)?;
    let agents = Agents::start(
        Flavor::Rumor {
            bin: bin.to_path_buf(),
            agent_args: vec!["--config".into(), path.display().to_string()],
        },
        1,
        "local",
    )?;
    let pid = agents.pid(0).context("the agent is gone")?;
    let before = rss_mb(pid).unwrap_or(0.0);
    let timing = agents.query(0, "ten", 1)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let compiled = loop {
        let info: serde_json::Value =
            serde_json::from_str(&agents.cli_ok(0, &["info", "--format", "json"])?)?;
        let compiled = info["handlers"].as_array().map_or(0, |hs| {
            hs.iter().filter(|h| h["runtime"]["compiles"] == 1).count()
        });
        if compiled == 10 || Instant::now() > deadline {
            break compiled;
        }
        host::sleep(Duration::from_millis(50))?;
    };
    let after = rss_mb(pid).unwrap_or(0.0);
    println!(
        "one agent: RSS {bare_rss:.1} MB without handlers; with 10 WASM handlers {before:.1} MB \
         before any run, {after:.1} MB with {compiled} modules compiled and run (query answered \
         in {:.1} ms)",
        timing.returned.as_secs_f64() * 1e3
    );
    Ok(())
}
