//! `soak`: a long nemesis run (`rumor_tests::nemesis`) against real agents in network
//! namespaces: faults one after another while events flow, then the checker. Needs root.
//!
//! ```text
//! cargo run -p rumor-tests --bin soak -- --minutes 10 [--nodes 5] [--profile lan] [--seed N]
//! ```
//!
//! Prints each fault as it starts and, at the end, per node which events it never ran or ran
//! too often; exits 1 if any node did.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rumor::cluster::Profile;
use rumor_tests::nemesis::{self, FaultKind, Settings};
use rumor_tests::netns::Cluster;
use rumor_tests::{Rng, cluster_slot};

/// Run faults against a cluster of real agents for a while, and check that every event
/// reached every handler once.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long to keep injecting faults.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Agents in the cluster (at least 3), one network namespace each.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Timing profile of the agents.
    #[arg(long, default_value = "lan")]
    profile: Profile,
    /// User events per second, each through a random live node.
    #[arg(long, default_value_t = 5)]
    rate: u32,
    /// Shortest and longest fault, in seconds. Keep rate × longest well under the 256 events
    /// a partition can catch up on today (docs/operations.md).
    #[arg(long, default_value_t = 3)]
    min_fault_secs: u64,
    #[arg(long, default_value_t = 15)]
    max_fault_secs: u64,
    /// Seed of every random choice (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.nodes < 3 {
        eprintln!("soak: --nodes must be at least 3");
        return ExitCode::from(2);
    }
    let mut rng = match args.seed {
        Some(seed) => {
            eprintln!("soak: seed {seed}");
            Rng::seeded(seed)
        }
        None => Rng::new("soak"),
    };
    let _slot = cluster_slot();
    let Some(mut cluster) = Cluster::start("rfsoak", args.nodes, args.profile.as_str()) else {
        eprintln!("soak: needs network namespaces (root, ip, iptables-restore)");
        return ExitCode::from(2);
    };
    let settings = Settings {
        faults: None,
        duration: Some(Duration::from_secs_f64(args.minutes * 60.0)),
        fault_for: (
            Duration::from_secs(args.min_fault_secs),
            Duration::from_secs(args.max_fault_secs.max(args.min_fault_secs)),
        ),
        calm_for: Duration::from_secs(2),
        rate: args.rate,
        kinds: FaultKind::ALL.to_vec(),
        deliver: Duration::from_secs(180),
    };
    let outcome = nemesis::run(&mut cluster, &settings, &mut rng);
    println!("{outcome}");
    if outcome.is_ok() {
        println!("soak: every event reached every handler once (or, after a crash, as documented)");
        ExitCode::SUCCESS
    } else {
        println!("soak: FAILED (see above)");
        ExitCode::FAILURE
    }
}
