//! The measurements, in the order they run against one set of agents: join, events (each
//! preceded by the handler floor), queries, memory, idle CPU and traffic, failure detection.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::agents::Agents;
use super::host::{self, TrafficCounter, check_interrupt, sleep, unix_ns};
use super::report::{Figures, max, median, percentile};

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub events: usize,
    pub queries: usize,
    pub idle: Duration,
    pub verbose: bool,
    /// How the cluster forms: agent 0 joins all the others with one command, or every
    /// other agent joins agent 0 at once.
    pub join: JoinMode,
}

/// See [`Plan::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinMode {
    /// `join ADDR1 … ADDRn-1` on agent 0.
    SeedJoinsAll,
    /// `join SEED` on every other agent, concurrently.
    AllJoinSeed,
}

const EVENT: &str = "bench";
const JOIN_TIMEOUT: Duration = Duration::from_secs(90);
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the handlers' timestamp files are read while an event's runs are awaited.
const STAMP_POLL: Duration = Duration::from_millis(20);
const FAIL_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs every measurement against `agents` (consumed: the last step kills one of them).
pub fn run(mut agents: Agents, plan: &Plan) -> anyhow::Result<Figures> {
    let n = agents.len();
    let t0 = Instant::now();
    let say = |what: &str| {
        if plan.verbose {
            eprintln!("[{} +{:.1?}] {what}", agents.label(), t0.elapsed());
        }
    };
    let mut f = Figures::default();

    say("join");
    f.join_s = join(&agents, plan.join)?.map(|d| d.as_secs_f64());
    sleep(Duration::from_secs(2))?;

    say("events");
    let rounds = events(&agents, plan.events)?;
    f.floor_ms_max = max(&rounds.floors);
    f.floor_ms_samples = rounds.floors;
    f.deliver_ms_p50 = percentile(&rounds.delivers, 0.5);
    f.deliver_ms_max = max(&rounds.delivers);
    f.event_ms_p50 = percentile(&rounds.handlers, 0.5);
    f.event_ms_max = max(&rounds.handlers);
    f.origin_ms_samples = rounds.origins;
    f.deliver_ms_per_event = rounds.deliver_max_per_event;
    f.event_ms_per_event = rounds.handler_max_per_event;
    f.deliveries_missed = rounds.delivers_missed;
    f.handler_runs_missed = rounds.handlers_missed;
    if rounds.delivers_missed > 0 {
        f.deliver_ms_max = None; // some agent never received an event: no finite maximum
    }
    if rounds.handlers_missed > 0 {
        f.event_ms_max = None;
    }

    say("queries");
    let mut query_ms = Vec::new();
    for k in 0..plan.queries {
        let t = agents.query(k % n, EVENT, n)?;
        match t.all_answered {
            Some(d) => query_ms.push(d.as_secs_f64() * 1e3),
            None => eprintln!(
                "[{}] query {k}: only {} of {n} answers before the CLI returned after {:?}",
                agents.label(),
                t.answers,
                t.returned
            ),
        }
        f.query_returned_ms.push(t.returned.as_secs_f64() * 1e3);
        sleep(Duration::from_millis(300))?;
    }
    f.query_ms = if query_ms.len() == plan.queries {
        median(&query_ms)
    } else {
        None
    };
    f.query_ms_samples = query_ms;

    say("settling, then memory, idle CPU and traffic");
    sleep(Duration::from_secs(3))?;
    let pids: Vec<u32> = (0..n).filter_map(|i| agents.pid(i)).collect();
    let rss: Vec<f64> = pids.iter().filter_map(|&p| host::rss_mb(p)).collect();
    f.rss_mb = median(&rss);
    let anon: Vec<f64> = pids.iter().filter_map(|&p| host::rss_anon_mb(p)).collect();
    f.rss_anon_mb = median(&anon);
    let counter = match TrafficCounter::install(agents.label(), &agents.ports()) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("[{}] idle traffic not measured: {e:#}", agents.label());
            None
        }
    };
    let before_bytes = counter.as_ref().and_then(|c| c.bytes().ok());
    let before: Vec<Option<Duration>> = pids.iter().map(|&p| host::cpu_time(p)).collect();
    let started = Instant::now();
    sleep(plan.idle)?;
    let after: Vec<Option<Duration>> = pids.iter().map(|&p| host::cpu_time(p)).collect();
    let after_bytes = counter.as_ref().and_then(|c| c.bytes().ok());
    let elapsed = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = before
        .iter()
        .zip(&after)
        .filter_map(|(b, a)| {
            Some((a.as_ref()?.as_secs_f64() - b.as_ref()?.as_secs_f64()) / elapsed * 100.0)
        })
        .collect();
    f.cpu_pct_idle = median(&cpu);
    if let (Some(b), Some(a)) = (before_bytes, after_bytes) {
        let per_node_s = |x: u64| x as f64 / n as f64 / elapsed;
        f.idle_bytes_per_node_s = Some(per_node_s((a.0 - b.0) + (a.1 - b.1)));
        f.idle_udp_tcp = Some((per_node_s(a.0 - b.0), per_node_s(a.1 - b.1)));
    }
    drop(counter);

    say("failure detection");
    f.fail_detect_s = fail_detect(&mut agents)?.map(|d| d.as_secs_f64());
    Ok(f)
}

/// From the first `join` command until every agent lists `n` alive members.
fn join(agents: &Agents, mode: JoinMode) -> anyhow::Result<Option<Duration>> {
    let n = agents.len();
    let started = Instant::now();
    match mode {
        JoinMode::SeedJoinsAll => agents.join_all_through_first()?,
        JoinMode::AllJoinSeed => agents.join_each_to_first()?,
    }
    let cli = started.elapsed();
    let all_alive = |i| {
        let members = agents.members(i)?;
        let alive = members.iter().filter(|(_, s)| s == "alive").count();
        if alive == n {
            return Ok(None);
        }
        let others: Vec<String> = members
            .iter()
            .filter(|(_, s)| s != "alive")
            .map(|(m, s)| format!("{m} {s}"))
            .collect();
        Ok(Some(format!(
            "{alive} alive of {} listed {others:?}",
            members.len()
        )))
    };
    let all = poll_all(agents, started, JOIN_TIMEOUT, "all alive", all_alive)?;
    eprintln!(
        "[{}] join: the join command(s) returned after {cli:.1?}, all alive after {all:.1?}",
        agents.label()
    );
    Ok(all)
}

/// Polls `check(i)` for every agent until it returns `None` (done) for all; `Some(state)`
/// says what is still missing. The time of an agent is when the check that first succeeded
/// returned (an upper bound: it held at that moment at the latest). Returns the time of the
/// last agent since `started`, or `None` if some agent still fails the check after `timeout`
/// (what is missing is printed).
fn poll_all(
    agents: &Agents,
    started: Instant,
    timeout: Duration,
    what: &str,
    check: impl Fn(usize) -> anyhow::Result<Option<String>> + Sync,
) -> anyhow::Result<Option<Duration>> {
    let mut pending: Vec<usize> = (0..agents.len())
        .filter(|&i| agents.pid(i).is_some())
        .collect();
    let mut last = Duration::ZERO;
    let mut states: BTreeMap<usize, String> = BTreeMap::new();
    while !pending.is_empty() {
        check_interrupt()?;
        if started.elapsed() > timeout {
            let states: Vec<String> = states
                .iter()
                .map(|(&i, s)| format!("{}: {s}", agents.name(i)))
                .collect();
            eprintln!(
                "[{}] gave up after {timeout:?} waiting for {what}; still waiting on {states:?}",
                agents.label()
            );
            return Ok(None);
        }
        // Every pending agent is checked at once (one CLI process each): a round takes about
        // as long as one check on a busy machine, where a sweep agent after agent took longer
        // the larger the cluster, and made the times that much coarser.
        let results: Vec<(usize, Duration, anyhow::Result<Option<String>>)> =
            std::thread::scope(|scope| {
                let threads: Vec<_> = pending
                    .iter()
                    .map(|&i| {
                        let check = &check;
                        scope.spawn(move || {
                            let result = check(i);
                            (i, started.elapsed(), result)
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|t| t.join().expect("a check thread panicked"))
                    .collect()
            });
        let mut still = Vec::new();
        for (i, at, result) in results {
            match result? {
                None => {
                    last = last.max(at);
                    states.remove(&i);
                }
                Some(state) => {
                    states.insert(i, state);
                    still.push(i);
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            sleep(Duration::from_millis(10))?;
        }
    }
    Ok(Some(last))
}

/// Runs `events` rounds of: the handler floor, then one user event from a different agent.
fn events(agents: &Agents, events: usize) -> anyhow::Result<Rounds> {
    let n = agents.len();
    let mut r = Rounds::default();
    let stamps_of = |i: usize| read_stamps(&agents.stamps_dir().join(agents.name(i)));
    for k in 0..events {
        r.floors.push(floor(agents, k)?);
        sleep(Duration::from_millis(500))?;

        let origin = (k * 7 + 3) % n;
        let before: Vec<usize> = (0..n).map(|i| stamps_of(i).len()).collect();
        let t0 = unix_ns();
        agents.send_event(origin, EVENT)?;
        // Each agent's handler appends a line per event: wait for one more line everywhere.
        // The times are the handlers' own timestamps, so how often this looks only decides
        // when it stops; it looks seldom because each look reads N files, CPU taken from the
        // very handler runs being timed.
        let started = Instant::now();
        let stamps = loop {
            check_interrupt()?;
            let stamps: Vec<Option<i128>> = (0..n)
                .map(|i| stamps_of(i).get(before[i]).copied())
                .collect();
            if stamps.iter().all(Option::is_some) || started.elapsed() > EVENT_TIMEOUT {
                break stamps;
            }
            sleep(STAMP_POLL)?;
        };
        let runs: Vec<f64> = stamps
            .iter()
            .flatten()
            .map(|&t| (t - t0) as f64 / 1e6)
            .collect();
        r.handler_max_per_event.extend(max(&runs));
        r.handlers.extend(runs);
        let missing: Vec<&str> = (0..n)
            .filter(|&i| stamps[i].is_none())
            .map(|i| agents.name(i))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "[{}] event {k}: no handler run on {missing:?} within {EVENT_TIMEOUT:?}",
                agents.label()
            );
            r.handlers_missed += missing.len();
        }
        // Which event this was: the newest one at its origin.
        let Some(at_origin) = agents.received(origin, EVENT)? else {
            continue; // Serf does not record when it received an event
        };
        let Some((&ltime, &sent)) = at_origin.iter().next_back() else {
            bail!("{} does not list the event it sent", agents.name(origin));
        };
        r.origins.push((sent - t0) as f64 / 1e6);
        let mut delivers = Vec::with_capacity(n);
        for i in 0..n {
            let received = agents.received(i, EVENT)?.unwrap_or_default();
            match received.get(&ltime) {
                Some(&ns) => delivers.push((ns - t0) as f64 / 1e6),
                None => r.delivers_missed += 1,
            }
        }
        r.deliver_max_per_event.extend(max(&delivers));
        r.delivers.extend(delivers);
        sleep(Duration::from_millis(500))?;
    }
    Ok(r)
}

/// What [`events`] measured, in ms.
#[derive(Default)]
struct Rounds {
    /// One per round: N handler runs at once, until the last has run.
    floors: Vec<f64>,
    /// One per agent and event: until the agent received it.
    delivers: Vec<f64>,
    /// One per agent and event: until the agent's handler ran.
    handlers: Vec<f64>,
    /// One per event: until the sending agent itself had it (the CLI's own cost).
    origins: Vec<f64>,
    /// One per event: the largest of `delivers` and of `handlers` for it.
    deliver_max_per_event: Vec<f64>,
    handler_max_per_event: Vec<f64>,
    /// (agent, event) pairs where the event never arrived / the handler never ran in time.
    delivers_missed: usize,
    handlers_missed: usize,
}

/// Starts `n` copies of the handler's command at once, with no agent involved, and returns
/// the time (ms) until the last one has written its timestamp.
fn floor(agents: &Agents, k: usize) -> anyhow::Result<f64> {
    let n = agents.len();
    let command = agents.stamp_command();
    let names: Vec<String> = (0..n).map(|i| format!("floor-{k}-{i}")).collect();
    let t0 = unix_ns();
    let mut children = Vec::with_capacity(n);
    for name in &names {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env("SERF_SELF_NAME", name)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start /bin/sh")?;
        children.push(child);
    }
    for mut child in children {
        child.wait()?;
    }
    let mut last = i128::MIN;
    for name in &names {
        let stamps = read_stamps(&agents.stamps_dir().join(name));
        let t = *stamps
            .first()
            .with_context(|| format!("floor run {name} wrote nothing"))?;
        last = last.max(t);
    }
    Ok((last - t0) as f64 / 1e6)
}

fn read_stamps(path: &Path) -> Vec<i128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills the last agent with SIGKILL and polls the others until all list it `failed`.
fn fail_detect(agents: &mut Agents) -> anyhow::Result<Option<Duration>> {
    let victim = agents.len() - 1;
    let name = agents.name(victim).to_owned();
    agents.kill9(victim);
    let started = Instant::now();
    let agents = &*agents;
    poll_all(
        agents,
        started,
        FAIL_TIMEOUT,
        &format!("{name} listed failed"),
        |i| {
            let members: BTreeMap<String, String> = agents.members(i)?.into_iter().collect();
            match members.get(&name) {
                Some(status) if status == "failed" => Ok(None),
                other => Ok(Some(format!("{name} is {other:?}"))),
            }
        },
    )
}
