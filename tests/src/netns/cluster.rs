//! A cluster of agents `n1..nN`, one per host of a [`Net`], each recording the user events its
//! handler runs ([`Records`]): what the fault tests, the nemesis runs and the soak command
//! start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::{Agent, wait_push_pulls};
use crate::monitor::{Monitor, is_user_event_prefixed};
use crate::netns::Net;
use crate::records::{Expect, Records, WARMUP};
use crate::wait::wait_for;

/// Bound for a cluster to form or re-form after a restart.
pub const CONVERGE: Duration = Duration::from_secs(20);

/// Agents `n1..nN` on the hosts of a [`Net`]; `n1` is the seed. Fields drop in order: agents,
/// then the network, then the records.
pub struct Cluster {
    pub agents: Vec<Agent>,
    pub net: Net,
    pub records: Records,
    pub profile: &'static str,
    /// Arguments every agent runs with beyond the profile and the recording handler.
    pub extra: Vec<String>,
}

impl Cluster {
    /// A network of `n` hosts (skipped, `None`, where namespaces are unavailable) and a
    /// converged cluster on it, with timing `profile` (`lan`: the default for real hosts;
    /// `local`: fast failure detection, for tests whose point is not timing).
    pub fn start(prefix: &str, n: usize, profile: &'static str) -> Option<Cluster> {
        Cluster::start_with(prefix, n, profile, &[])
    }

    /// Like [`Cluster::start`], every agent also given `extra` arguments.
    pub fn start_with(
        prefix: &str,
        n: usize,
        profile: &'static str,
        extra: &[&str],
    ) -> Option<Cluster> {
        let net = Net::new(prefix, n)?;
        let mut cluster = Cluster {
            agents: Vec::new(),
            net,
            records: Records::new(),
            profile,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            let mut args = cluster.agent_args();
            if i > 0 {
                args.extend(["--join".into(), cluster.agents[0].addr().to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let agent = cluster.net.host(i).spawn_agent(&node(i), &args);
            cluster.agents.push(agent);
        }
        let took = cluster.wait_all_alive(CONVERGE, "the cluster to form");
        eprintln!("{prefix}: {n} agents (profile {profile}) converged in {took:.1?}");
        Some(cluster)
    }

    /// The arguments every agent runs with: its profile, the recording handler, and the
    /// cluster's extra arguments.
    pub fn agent_args(&self) -> Vec<String> {
        let mut args = vec![
            "--profile".into(),
            self.profile.into(),
            "--event-handler".into(),
            self.records.handler(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }

    /// [`Cluster::agent_args`] plus `--join` of node `peer`: what a service manager with a
    /// fixed configuration restarts an agent with.
    pub fn restart_args(&self, peer: usize) -> Vec<String> {
        let mut args = self.agent_args();
        args.extend(["--join".into(), self.agents[peer].addr().to_string()]);
        args
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Every node's name.
    pub fn names(&self) -> Vec<String> {
        (0..self.len()).map(node).collect()
    }

    /// How many times node `i`'s handler ran each event (warm-ups excluded).
    pub fn handled(&self, i: usize) -> BTreeMap<String, usize> {
        self.records.counts(&node(i))
    }

    /// Waits until every node in `nodes` has handled every event in `events` at least once;
    /// returns how long that took.
    pub fn wait_delivered(
        &self,
        events: &[String],
        nodes: &[usize],
        timeout: Duration,
    ) -> Duration {
        let names: Vec<String> = nodes.iter().map(|&i| node(i)).collect();
        self.records.wait_delivered(events, &names, timeout)
    }

    /// `Ok` when every node handled each of `events` exactly once and nothing else.
    pub fn exactly_once(&self, events: &[String]) -> Result<(), String> {
        let expected: Vec<(String, Expect)> = self
            .names()
            .into_iter()
            .map(|n| (n, Expect::ExactlyOnce))
            .collect();
        let verdict = self.records.check(events, &expected);
        if verdict.is_ok() {
            Ok(())
        } else {
            Err(verdict.to_string())
        }
    }

    /// Waits until every agent lists exactly the cluster's nodes, once each, all alive.
    pub fn wait_all_alive(&self, timeout: Duration, what: &str) -> Duration {
        let start = Instant::now();
        let names = self.names();
        wait_for(timeout, what, || {
            for a in &self.agents {
                check_view(a, &names, &[])?;
            }
            Ok(())
        });
        start.elapsed()
    }

    /// Waits until every running agent has done `n` more push-pull (anti-entropy) exchanges
    /// than now. After a delivery, this gives late duplicates every chance to show up, without
    /// a fixed sleep.
    pub fn settle(&self, n: u64) {
        // A node starts an exchange every 5 s (`local`) or 30 s (`lan`) and answers others'.
        let interval = if self.profile == "lan" { 30 } else { 5 };
        wait_push_pulls(
            &self.agents,
            n,
            Duration::from_secs(interval * (n + 1) + 15),
        );
    }

    /// A `rumor monitor` on every agent, each proven live by a warm-up event it has seen.
    pub fn watch_all(&self) -> Vec<Monitor> {
        let watches: Vec<Monitor> = self.agents.iter().map(Agent::monitor).collect();
        warm_up(&self.agents[0], &watches);
        watches
    }

    /// Sends user event `name` through node `i`.
    pub fn event(&self, i: usize, name: &str) {
        self.agents[i].cli_ok(&["event", name]);
    }

    /// Sum over the agents of one of the cluster counters of `rumor info`. Panics naming the
    /// agent when one cannot be read: a figure that is not there is not 0.
    pub fn counter_sum(&self, name: &str) -> u64 {
        self.agents
            .iter()
            .map(|a| a.counter(name).unwrap_or_else(|e| panic!("{e}")))
            .sum()
    }
}

/// The name of node `i`: `n1` for 0.
pub fn node(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Sends warm-up events through `via` until every watch has seen one (at most 20 s).
pub fn warm_up(via: &Agent, watches: &[Monitor]) {
    let mut round = 0u32;
    wait_for(
        Duration::from_secs(20),
        "every monitor to see a warm-up event",
        || {
            if round.is_multiple_of(10) {
                via.cli_ok(&["event", &format!("{WARMUP}{round}")]);
            }
            round += 1;
            let deaf: Vec<&str> = watches
                .iter()
                .filter(|w| w.first(|l| is_user_event_prefixed(l, WARMUP)).is_none())
                .map(Monitor::agent)
                .collect();
            if deaf.is_empty() {
                Ok(())
            } else {
                Err(format!("no warm-up event yet on {deaf:?}"))
            }
        },
    );
}

/// `Ok` when `observer` lists each of `alive` once as alive, each of `failed` once as failed,
/// and nobody else.
pub fn check_view(observer: &Agent, alive: &[String], failed: &[String]) -> Result<(), String> {
    let members = observer.members()?;
    let mut problems = Vec::new();
    for (names, status) in [(alive, "alive"), (failed, "failed")] {
        for name in names {
            let entries: Vec<_> = members.iter().filter(|m| &m.name == name).collect();
            match entries.as_slice() {
                [m] if m.status == status => {}
                [m] => problems.push(format!("sees {name} {} (want {status})", m.status)),
                [] => problems.push(format!("does not list {name}")),
                many => problems.push(format!("lists {name} {} times", many.len())),
            }
        }
    }
    for m in &members {
        if !alive.contains(&m.name) && !failed.contains(&m.name) {
            problems.push(format!("lists unexpected {} ({})", m.name, m.status));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} {}", observer.name(), problems.join(", ")))
    }
}
