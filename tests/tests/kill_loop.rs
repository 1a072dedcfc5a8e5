//! "No replay" under crashes, counted (issue 21, item 8): one agent is killed with `kill -9`
//! thirty times at random moments while a stream of events flows, and restarted each time
//! from its data directory. No event may be lost, and a run may repeat only where a crash
//! interrupted it: at most one per handler per crash, and only the run that was in flight.
//!
//! Each handler run appends the event's name and the pid of the agent that ran it
//! (`$PPID`: the agent starts the handler's shell itself), so every line says which process
//! ran it, and "the run in flight" of a crash is the last line its process wrote.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumor_tests::{Agent, Rng, cluster_slot, test_tempdir, wait_for, wait_push_pulls};

/// Crashes of the victim.
const KILLS: usize = 30;
/// Events per second sent through a node that is never killed.
const RATE: u32 = 25;

/// One handler run: the event, and the pid of the agent process that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    event: String,
    pid: u32,
}

fn runs(path: &std::path::Path) -> Vec<Run> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (event, pid) = l.rsplit_once(' ')?;
            Some(Run {
                event: event.to_owned(),
                pid: pid.parse().ok()?,
            })
        })
        .collect()
}

/// Events `runs` lacks of `sent`.
fn lacking<'a>(runs: &[Run], sent: &'a [String]) -> Vec<&'a str> {
    let have: std::collections::BTreeSet<&str> = runs.iter().map(|r| r.event.as_str()).collect();
    sent.iter()
        .map(String::as_str)
        .filter(|e| !have.contains(e))
        .collect()
}

#[test]
fn thirty_kills_under_a_stream_of_events_lose_none_and_repeat_only_the_run_in_flight() {
    let _slot = cluster_slot();
    let records = test_tempdir();
    let handler = format!(
        "user=echo \"$SERF_USER_EVENT $PPID\" >> {}/$SERF_SELF_NAME",
        records.path().display()
    );
    let sender = Agent::start("n1", &["--event-handler", &handler]);
    let seed = sender.addr().to_string();
    let args = ["--event-handler", handler.as_str(), "--join", seed.as_str()];
    let mut victim = Agent::start("n2", &args);
    let bystander = Agent::start("n3", &args);
    wait_for(
        Duration::from_secs(20),
        "3 members alive everywhere",
        || {
            for a in [&sender, &victim, &bystander] {
                let alive = a.members()?.iter().filter(|m| m.status == "alive").count();
                if alive != 3 {
                    return Err(format!("{} sees {alive} alive", a.name()));
                }
            }
            Ok(())
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stream = {
        let control = sender.control().clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let period = Duration::from_secs(1) / RATE;
            let mut sent = Vec::new();
            let mut failed = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let name = format!("e-{k:05}");
                match control.try_cli(&["event", &name]) {
                    Ok(_) => sent.push(name),
                    Err(e) => failed.push(e),
                }
                k += 1;
                std::thread::sleep(period.saturating_sub(start.elapsed()));
            }
            (sent, failed)
        })
    };

    let mut rng = Rng::new("kill loop");
    let mut pids = vec![victim.pid().expect("the victim runs")];
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..KILLS {
            std::thread::sleep(
                rng.between(Duration::from_millis(200), Duration::from_millis(1500)),
            );
            victim.kill9();
            victim.restart();
            pids.push(victim.pid().expect("the victim runs again"));
        }
        // A little more stream after the last restart, then stop.
        std::thread::sleep(Duration::from_secs(1));
    }));
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = stream.join().expect("the sender thread");
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    let looped = started.elapsed();
    assert!(failed.is_empty(), "sending through n1 failed: {failed:?}");
    // The stream ran through the kills (how many it sent depends on the machine's speed).
    assert!(sent.len() > KILLS, "only {} events sent", sent.len());

    // Nothing lost: every event on every handler, the victim's included.
    let path = |name: &str| records.path().join(name);
    wait_for(
        Duration::from_secs(60),
        "every event on every handler",
        || {
            let short: Vec<String> = ["n1", "n2", "n3"]
                .iter()
                .filter_map(|n| {
                    let missing = lacking(&runs(&path(n)), &sent);
                    (!missing.is_empty()).then(|| {
                        format!(
                            "{n} lacks {} ({} in all)",
                            missing[..missing.len().min(8)].join(" "),
                            missing.len()
                        )
                    })
                })
                .collect();
            if short.is_empty() {
                Ok(())
            } else {
                Err(short.join("; "))
            }
        },
    );
    // Late copies (a relay, an exchange) get every chance to show up.
    wait_push_pulls(&[sender, victim, bystander], 2, Duration::from_secs(45));

    // The nodes never killed ran each event once.
    for n in ["n1", "n3"] {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for r in runs(&path(n)) {
            *count.entry(r.event).or_default() += 1;
        }
        let twice: Vec<_> = count.iter().filter(|(_, k)| **k > 1).collect();
        assert!(
            twice.is_empty(),
            "{n} was never killed but ran events twice: {twice:?}"
        );
    }

    // The victim: every repeat follows a crash, at most one per crash, and it is the run the
    // crash interrupted (the last its process wrote).
    // A run whose shell started as its agent died reads `$PPID` 1 (it was already orphaned):
    // it belongs to the process of the line before it, which was just killed.
    let victim_runs = runs(&path("n2"));
    let mut epochs = Vec::with_capacity(victim_runs.len());
    for r in &victim_runs {
        let e = match pids.iter().position(|&p| p == r.pid) {
            Some(e) => e,
            None => *epochs.last().unwrap_or(&0),
        };
        epochs.push(e);
    }
    let last_of: BTreeMap<usize, &str> = epochs
        .iter()
        .zip(&victim_runs)
        .map(|(&e, r)| (e, r.event.as_str()))
        .collect();
    let mut first_run: BTreeMap<&str, usize> = BTreeMap::new();
    let mut repeats_per_crash: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (&e, r) in epochs.iter().zip(&victim_runs) {
        match first_run.get(r.event.as_str()) {
            None => {
                first_run.insert(&r.event, e);
            }
            Some(&first) if first == e => {
                problems.push(format!(
                    "{} ran twice in one process (pid {})",
                    r.event, r.pid
                ));
            }
            Some(&first) => {
                if last_of.get(&first) != Some(&r.event.as_str()) {
                    problems.push(format!(
                        "{} ran again after crash {} but was not the run in flight then \
                         (that was {:?})",
                        r.event,
                        first + 1,
                        last_of.get(&first)
                    ));
                }
                repeats_per_crash.entry(first).or_default().push(&r.event);
            }
        }
    }
    for (crash, events) in &repeats_per_crash {
        if events.len() > 1 {
            problems.push(format!(
                "crash {} was followed by {} repeats: {events:?}",
                crash + 1,
                events.len()
            ));
        }
    }
    let repeated: usize = repeats_per_crash.values().map(Vec::len).sum();
    eprintln!(
        "FIGURE kill loop: {} events at {RATE}/s over {looped:.1?}, {KILLS} kill -9 of n2: \
         lost 0, repeated {repeated} (each the run its crash interrupted)",
        sent.len()
    );
    assert!(
        problems.is_empty(),
        "the victim's runs:\n{}",
        problems.join("\n")
    );
}
