//! Nemesis runs (after Jepsen): a [`Cluster`] of recording agents in network namespaces, a
//! steady stream of user events sent through random live nodes, and faults one after another
//! — one-way partitions, flapping links, bridge partitions, two-way splits, `kill -9` and
//! graceful restarts — each for a random while, then healed. At the end every fault is healed,
//! every node runs, and the checker ([`crate::records::check`]) says, per node, which events
//! it never ran and which it ran too often: every node runs every event exactly once, except
//! that a node killed `k` times may run up to `k` events a second time (the run each crash
//! interrupted; docs/operations.md).
//!
//! The fault suite runs a bounded schedule (`faults.rs`); `cargo run -p rumor-tests --bin soak
//! -- --minutes 10` runs one for as long as asked (docs/testing.md).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::Control;
use crate::netns::{CONVERGE, Cluster, node};
use crate::records::{Expect, Verdict};
use crate::rng::Rng;

/// The kinds of fault a run draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Some nodes cannot reach the others; the others can reach them.
    OneWay,
    /// Two sides that cannot reach each other at all.
    Split,
    /// Two sides that cannot reach each other, and one node that reaches both.
    Bridge,
    /// A split that is cut and healed again every second or so.
    Flap,
    /// `kill -9` of a node, restarted when the fault ends.
    Crash,
    /// SIGTERM (a graceful leave) of a node, restarted when the fault ends.
    Restart,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::OneWay,
        FaultKind::Split,
        FaultKind::Bridge,
        FaultKind::Flap,
        FaultKind::Crash,
        FaultKind::Restart,
    ];
}

/// One fault as drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    OneWay {
        from: Vec<usize>,
        to: Vec<usize>,
    },
    Split {
        a: Vec<usize>,
        b: Vec<usize>,
    },
    Bridge {
        a: Vec<usize>,
        bridge: usize,
        b: Vec<usize>,
    },
    Flap {
        a: Vec<usize>,
        b: Vec<usize>,
        period: Duration,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |s: &[usize]| s.iter().map(|&i| node(i)).collect::<Vec<_>>().join(",");
        match self {
            Fault::OneWay { from, to } => {
                write!(f, "one-way: {} cannot reach {}", names(from), names(to))
            }
            Fault::Split { a, b } => write!(f, "split {} | {}", names(a), names(b)),
            Fault::Bridge { a, bridge, b } => {
                write!(f, "bridge {} | {} | {}", names(a), node(*bridge), names(b))
            }
            Fault::Flap { a, b, period } => {
                write!(f, "flapping {} | {} every {period:.1?}", names(a), names(b))
            }
            Fault::Crash { node: i } => write!(f, "kill -9 {}", node(*i)),
            Fault::Restart { node: i } => write!(f, "graceful restart of {}", node(*i)),
        }
    }
}

/// Draws a fault of `kind` for a cluster of `n` nodes (at least 3).
pub fn draw(kind: FaultKind, n: usize, rng: &mut Rng) -> Fault {
    assert!(n >= 3, "nemesis runs need at least 3 nodes");
    let order = rng.pick(n, n);
    let cut = 1 + rng.below(n / 2);
    let (a, b) = (order[..cut].to_vec(), order[cut..].to_vec());
    match kind {
        FaultKind::OneWay => Fault::OneWay { from: a, to: b },
        FaultKind::Split => Fault::Split { a, b },
        FaultKind::Bridge => {
            let bridge = order[0];
            let rest = &order[1..];
            let cut = 1 + rng.below(rest.len() - 1);
            Fault::Bridge {
                a: rest[..cut].to_vec(),
                bridge,
                b: rest[cut..].to_vec(),
            }
        }
        FaultKind::Flap => Fault::Flap {
            a,
            b,
            period: rng.between(Duration::from_millis(500), Duration::from_millis(1500)),
        },
        FaultKind::Crash => Fault::Crash { node: order[0] },
        FaultKind::Restart => Fault::Restart { node: order[0] },
    }
}

/// How long and how hard a run is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Faults to inject (`None`: until `duration` is over).
    pub faults: Option<usize>,
    /// How long to keep injecting (`None`: until `faults` are done).
    pub duration: Option<Duration>,
    /// Each fault lasts a random time in this range.
    pub fault_for: (Duration, Duration),
    /// Calm between two faults.
    pub calm_for: Duration,
    /// User events per second, each through a random live node.
    pub rate: u32,
    /// The kinds drawn from, in turn: a bounded run sees each kind.
    pub kinds: Vec<FaultKind>,
    /// Bound for everything to be delivered once all is healed.
    pub deliver: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            faults: Some(FaultKind::ALL.len()),
            duration: None,
            fault_for: (Duration::from_secs(3), Duration::from_secs(6)),
            calm_for: Duration::from_secs(2),
            rate: 5,
            kinds: FaultKind::ALL.to_vec(),
            deliver: Duration::from_secs(120),
        }
    }
}

/// What a run did and what the checker found.
pub struct Outcome {
    /// Events the agents accepted.
    pub sent: Vec<String>,
    /// `rumor event` commands that failed (sent only to running nodes: there should be none).
    pub failed_sends: Vec<String>,
    /// The faults, with when they began (since the start of the run).
    pub schedule: Vec<(Duration, Fault)>,
    /// `kill -9`s per node.
    pub kills: Vec<usize>,
    pub verdict: Verdict,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.failed_sends.is_empty() && self.verdict.is_ok()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} events sent; faults:", self.sent.len())?;
        for (at, fault) in &self.schedule {
            writeln!(f, "  +{at:.1?} {fault}")?;
        }
        if !self.failed_sends.is_empty() {
            writeln!(f, "failed sends: {:?}", self.failed_sends)?;
        }
        write!(f, "{}", self.verdict)
    }
}

/// Runs faults on `c` as `settings` say while events flow, heals everything, and checks.
pub fn run(c: &mut Cluster, settings: &Settings, rng: &mut Rng) -> Outcome {
    let n = c.len();
    let down: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stream = spawn_stream(
        c.agents.iter().map(|a| a.control().clone()).collect(),
        Arc::clone(&down),
        Arc::clone(&stop),
        settings.rate,
        rng.below(usize::MAX),
    );
    let _stop_stream = StopOnDrop(Arc::clone(&stop));
    let start = Instant::now();
    let mut schedule = Vec::new();
    let mut kills = vec![0; n];
    let mut k = 0;
    loop {
        let more_faults = settings.faults.is_none_or(|f| k < f);
        let more_time = settings.duration.is_none_or(|d| start.elapsed() < d);
        if !more_faults || !more_time {
            break;
        }
        let kind = settings.kinds[k % settings.kinds.len()];
        let fault = draw(kind, n, rng);
        let lasts = rng.between(settings.fault_for.0, settings.fault_for.1);
        eprintln!("nemesis +{:.1?}: {fault} for {lasts:.1?}", start.elapsed());
        schedule.push((start.elapsed(), fault.clone()));
        inject(c, &fault, lasts, &down, &mut kills);
        std::thread::sleep(settings.calm_for);
        k += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, failed_sends) = stream.join().expect("the event stream thread");

    c.net.heal();
    c.net.clear_loss();
    c.wait_all_alive(
        CONVERGE * 3,
        "every node alive everywhere after the nemesis",
    );
    let names = c.names();
    let delivered = wait_delivered_or_not(c, &sent, settings.deliver);
    if delivered {
        // Late copies (a relay, an exchange) get every chance to show up.
        c.settle(1);
    }
    let expected: Vec<(String, Expect)> = names
        .into_iter()
        .zip(&kills)
        .map(|(name, &k)| {
            let expect = if k == 0 {
                Expect::ExactlyOnce
            } else {
                Expect::AtLeastOnce { repeats: k }
            };
            (name, expect)
        })
        .collect();
    Outcome {
        verdict: c.records.check(&sent, &expected),
        sent,
        failed_sends,
        schedule,
        kills,
    }
}

/// Waits until every node ran every event, or `timeout`; says which.
fn wait_delivered_or_not(c: &Cluster, events: &[String], timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        let all = (0..c.len()).all(|i| {
            let got = c.handled(i);
            events.iter().all(|e| got.contains_key(e))
        });
        if all {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Carries out `fault` for `lasts`, then undoes it.
fn inject(
    c: &mut Cluster,
    fault: &Fault,
    lasts: Duration,
    down: &Mutex<BTreeSet<usize>>,
    kills: &mut [usize],
) {
    match fault {
        Fault::OneWay { from, to } => {
            c.net.one_way(from, to);
            std::thread::sleep(lasts);
            c.net.heal();
        }
        Fault::Split { a, b } => {
            c.net.partition(a, b);
            std::thread::sleep(lasts);
            c.net.heal();
        }
        Fault::Bridge { a, b, .. } => {
            // The bridge is in neither side, so it keeps reaching both.
            c.net.partition(a, b);
            std::thread::sleep(lasts);
            c.net.heal();
        }
        Fault::Flap { a, b, period } => {
            let start = Instant::now();
            let mut cut = false;
            while start.elapsed() < lasts {
                cut = !cut;
                if cut {
                    c.net.partition(a, b);
                } else {
                    c.net.heal();
                }
                std::thread::sleep(*period);
            }
            c.net.heal();
        }
        Fault::Crash { node: i } | Fault::Restart { node: i } => {
            {
                // Held while the node stops, so no event is handed to it meanwhile.
                let mut down = down.lock().unwrap_or_else(|p| p.into_inner());
                down.insert(*i);
                if matches!(fault, Fault::Crash { .. }) {
                    c.agents[*i].kill9();
                    kills[*i] += 1;
                } else {
                    c.agents[*i].terminate(Duration::from_secs(15));
                }
            }
            std::thread::sleep(lasts);
            let peer = (i + 1) % c.len();
            let args = c.restart_args(peer);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            c.agents[*i].restart_with(&args);
            down.lock().unwrap_or_else(|p| p.into_inner()).remove(i);
        }
    }
}

/// Sends `rate` events a second through random nodes not in `down`, until `stop`; returns
/// the names the agents accepted and the errors of those they did not.
fn spawn_stream(
    controls: Vec<Control>,
    down: Arc<Mutex<BTreeSet<usize>>>,
    stop: Arc<AtomicBool>,
    rate: u32,
    seed: usize,
) -> std::thread::JoinHandle<(Vec<String>, Vec<String>)> {
    std::thread::spawn(move || {
        let mut rng = Rng::seeded(seed as u64);
        let period = Duration::from_secs(1) / rate.max(1);
        let (mut sent, mut failed) = (Vec::new(), Vec::new());
        let mut k = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            {
                let down = down.lock().unwrap_or_else(|p| p.into_inner());
                let up: Vec<usize> = (0..controls.len()).filter(|i| !down.contains(i)).collect();
                let via = up[rng.below(up.len())];
                let name = format!("nm-{k:05}");
                match controls[via].try_cli(&["event", &name]) {
                    Ok(_) => sent.push(name),
                    Err(e) => failed.push(e),
                }
                k += 1;
            }
            std::thread::sleep(period.saturating_sub(started.elapsed()));
        }
        (sent, failed)
    })
}

/// Sets the flag when dropped (a background thread's stop signal, also on panic).
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_faults_name_disjoint_nonempty_sides() {
        let mut rng = Rng::seeded(7);
        for round in 0..200 {
            let n = 3 + round % 6;
            for kind in FaultKind::ALL {
                match draw(kind, n, &mut rng) {
                    Fault::OneWay { from: a, to: b }
                    | Fault::Split { a, b }
                    | Fault::Flap { a, b, .. } => {
                        assert!(!a.is_empty() && !b.is_empty());
                        assert!(a.iter().all(|i| !b.contains(i)));
                        assert_eq!(a.len() + b.len(), n);
                    }
                    Fault::Bridge { a, bridge, b } => {
                        assert!(!a.is_empty() && !b.is_empty());
                        assert!(!a.contains(&bridge) && !b.contains(&bridge));
                        assert_eq!(a.len() + b.len() + 1, n);
                    }
                    Fault::Crash { node } | Fault::Restart { node } => assert!(node < n),
                }
            }
        }
        let shown = draw(FaultKind::Bridge, 3, &mut Rng::seeded(1)).to_string();
        assert!(shown.starts_with("bridge n"), "{shown}");
    }
}
