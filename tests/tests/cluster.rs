//! End-to-end cluster behaviour: real agents on 127.0.0.1, driven through the CLI.
//!
//! Each test holds a [`cluster_slot`] so that a small machine does not run so many debug-built
//! agents at once that the fast `local` failure detector starts declaring live agents failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use rumor_tests::{
    Agent, Member, cluster_slot, is_user_event, live_monitors, wait_for, wait_push_pulls,
};

/// Bound for convergence that the issue does not time (a margin for loaded CI machines).
const CONVERGE: Duration = Duration::from_secs(10);

/// Starts `n` agents named `<prefix>-1..n`, each tagged `role=<prefix>-role-i`; the first is the
/// seed and every other one starts with `--join <seed>`.
fn start_cluster(prefix: &str, n: usize) -> Vec<Agent> {
    let seed = Agent::start(&format!("{prefix}-1"), &["--tag", &role(prefix, 1)]);
    let join = seed.addr().to_string();
    let mut agents = vec![seed];
    for i in 2..=n {
        agents.push(Agent::start(
            &format!("{prefix}-{i}"),
            &["--join", &join, "--tag", &role(prefix, i)],
        ));
    }
    agents
}

fn role(prefix: &str, i: usize) -> String {
    format!("role={prefix}-role-{i}")
}

/// `Ok` when every observer lists exactly one entry per name in `want`, with that status, and
/// no other names; `Err` lists what differs.
fn check_view(observers: &[&Agent], want: &BTreeMap<String, &str>) -> Result<(), String> {
    let mut problems = Vec::new();
    for obs in observers {
        let members = obs.members()?;
        let mut seen: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
        for m in &members {
            seen.entry(m.name.as_str()).or_default().push(m);
        }
        for (name, status) in want {
            match seen.get(name.as_str()).map(Vec::as_slice) {
                None | Some([]) => problems.push(format!("{} does not list {name}", obs.name())),
                Some([m]) if m.status == *status => {}
                Some([m]) => problems.push(format!(
                    "{} sees {name} as {} (want {status})",
                    obs.name(),
                    m.status
                )),
                Some(many) => problems.push(format!(
                    "{} lists {name} {} times: {many:?}",
                    obs.name(),
                    many.len()
                )),
            }
        }
        for name in seen.keys() {
            if !want.contains_key(*name) {
                problems.push(format!("{} lists unexpected member {name}", obs.name()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn all_alive(agents: &[Agent]) -> BTreeMap<String, &'static str> {
    agents
        .iter()
        .map(|a| (a.name().to_owned(), "alive"))
        .collect()
}

fn refs(agents: &[Agent]) -> Vec<&Agent> {
    agents.iter().collect()
}

#[test]
fn five_agents_join_through_one_seed() {
    let _slot = cluster_slot();
    let agents = start_cluster("join", 5);
    let last_started = Instant::now();
    let want = all_alive(&agents);
    wait_for(
        CONVERGE,
        "every agent to list 5 alive members with their tags",
        || {
            check_view(&refs(&agents), &want)?;
            // Tags and addresses as every agent sees them.
            for obs in &agents {
                for m in obs.members()? {
                    let i: usize = m
                        .name
                        .rsplit('-')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let want_role = role("join", i);
                    let want_role = want_role
                        .split_once('=')
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    if m.tags.get("role").map(String::as_str) != Some(want_role) {
                        return Err(format!(
                            "{} sees {} with tags {:?}",
                            obs.name(),
                            m.name,
                            m.tags
                        ));
                    }
                    let agent = agents
                        .iter()
                        .find(|a| a.name() == m.name)
                        .expect("known name");
                    if m.addr != "127.0.0.1" || m.port != agent.port() {
                        return Err(format!(
                            "{} sees {} at {}:{}",
                            obs.name(),
                            m.name,
                            m.addr,
                            m.port
                        ));
                    }
                }
            }
            Ok(())
        },
    );
    eprintln!(
        "5 agents converged {:?} after the last one started",
        last_started.elapsed()
    );
}

#[test]
fn user_event_reaches_every_agent_exactly_once() {
    let _slot = cluster_slot();
    let agents = start_cluster("event", 5);
    let want = all_alive(&agents);
    wait_for(CONVERGE, "the cluster to converge", || {
        check_view(&refs(&agents), &want)
    });
    let monitors = live_monitors(&agents, CONVERGE);

    let sender = &agents[2];
    let sent = Instant::now();
    sender.cli_ok(&["event", "deploy", "v1"]);
    for (agent, monitor) in agents.iter().zip(&monitors) {
        let line = monitor.wait_for(Duration::from_secs(5), "the deploy event", |l| {
            is_user_event(l, "deploy")
        });
        let event = &line["event"];
        assert_eq!(event["payload"], "v1", "on {}: {line}", agent.name());
        assert_eq!(
            event["origin"],
            sender.name(),
            "on {}: {line}",
            agent.name()
        );
        assert_eq!(event["coalesce"], true, "on {}: {line}", agent.name());
        assert!(event["ltime"].is_u64(), "on {}: {line}", agent.name());
    }
    eprintln!("deploy reached all 5 monitors within {:?}", sent.elapsed());

    // A duplicate would come from a relay or an anti-entropy exchange: wait until every agent
    // has done one more exchange (the `local` profile starts one every 5 s).
    wait_push_pulls(&agents, 1, Duration::from_secs(30));
    for (agent, monitor) in agents.iter().zip(&monitors) {
        let n = monitor.count(|l| is_user_event(l, "deploy"));
        assert_eq!(n, 1, "{} saw deploy {n} times", agent.name());
    }
}

#[test]
fn tag_change_reaches_every_member() {
    let _slot = cluster_slot();
    let agents = start_cluster("tags", 4);
    let want = all_alive(&agents);
    wait_for(CONVERGE, "the cluster to converge", || {
        check_view(&refs(&agents), &want)
    });

    let changed = &agents[1];
    let start = Instant::now();
    changed.cli_ok(&["tags", "--set", "version=2"]);
    wait_for(
        CONVERGE,
        "version=2 on every member's view of the changed node",
        || {
            for obs in &agents {
                let entries = obs.members_named(changed.name())?;
                let [m] = entries.as_slice() else {
                    return Err(format!(
                        "{} lists {} {} times",
                        obs.name(),
                        changed.name(),
                        entries.len()
                    ));
                };
                if m.tags.get("version").map(String::as_str) != Some("2")
                    || !m.tags.contains_key("role")
                {
                    return Err(format!("{} sees tags {:?}", obs.name(), m.tags));
                }
            }
            Ok(())
        },
    );
    eprintln!("tag change reached every member in {:?}", start.elapsed());
}

#[test]
fn killed_agent_is_failed_and_leaving_agent_is_left() {
    let _slot = cluster_slot();
    let mut agents = start_cluster("fail", 4);
    let mut want = all_alive(&agents);
    wait_for(CONVERGE, "the cluster to converge", || {
        check_view(&refs(&agents), &want)
    });

    agents[3].kill9();
    want.insert(agents[3].name().to_owned(), "failed");
    wait_for(CONVERGE, "the killed agent to be listed failed", || {
        check_view(&refs(&agents[..3]), &want)
    });
    // Its host refused the packets sent to its closed port, which is what gave it away.
    let refused: u64 = agents[..3]
        .iter()
        .map(|a| counter(a, "packets_refused"))
        .sum();
    assert!(refused > 0, "no agent counted a refused packet");

    let out = agents[2].cli(&["leave"]);
    assert!(
        out.status.success(),
        "rumor leave failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let status = agents[2].wait_exit(CONVERGE);
    assert!(
        status.is_some_and(|s| s.success()),
        "after rumor leave the agent should exit 0, got {status:?}"
    );
    want.insert(agents[2].name().to_owned(), "left");
    wait_for(CONVERGE, "the agent that left to be listed left", || {
        check_view(&refs(&agents[..2]), &want)
    });
}

#[test]
fn restarted_agent_rejoins_with_a_new_generation() {
    let _slot = cluster_slot();
    let mut agents = start_cluster("restart", 4);
    let mut want = all_alive(&agents);
    wait_for(CONVERGE, "the cluster to converge", || {
        check_view(&refs(&agents), &want)
    });
    let name = agents[3].name().to_owned();
    let before = agents[0].members_named(&name).expect("members")[0].generation;

    agents[3].kill9();
    want.insert(name.clone(), "failed");
    wait_for(CONVERGE, "the killed agent to be listed failed", || {
        check_view(&refs(&agents[..3]), &want)
    });

    // Same name, port and data dir; its arguments still hold `--join <seed>`.
    agents[3].restart();
    want.insert(name.clone(), "alive");
    wait_for(
        CONVERGE,
        "the restarted agent to be alive everywhere, once",
        || {
            check_view(&refs(&agents), &want)?;
            for obs in &agents {
                let m = &obs.members_named(&name)?[0];
                if m.generation <= before {
                    return Err(format!(
                        "{} sees {name} with generation {} (was {before})",
                        obs.name(),
                        m.generation
                    ));
                }
            }
            Ok(())
        },
    );
}

#[test]
fn bad_input_is_rejected_and_the_agent_keeps_serving() {
    let _slot = cluster_slot();
    let mut agents = start_cluster("bad", 3);
    let want = all_alive(&agents);
    wait_for(CONVERGE, "the cluster to converge", || {
        check_view(&refs(&agents), &want)
    });
    let target = &agents[1];

    // Garbage datagrams: random bytes with a wrong magic, then our magic with a future version.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let mut garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    garbage[0] = 0xff;
    let mut future = [0u8; 64];
    future[0] = 0x52;
    future[1] = 99;
    let rejected_before = counter(target, "packets_rejected");
    let offset = target.log_len();
    for datagram in [&garbage[..], &future[..], &[0x52][..]] {
        udp.send_to(datagram, target.addr()).expect("send datagram");
    }
    // Every datagram is counted; the log names the reason (one line per second at most, so a
    // flood cannot fill the disk: the burst may show as one line plus a suppressed count).
    wait_for(
        Duration::from_secs(5),
        "the agent to count 3 rejected datagrams",
        || match counter(target, "packets_rejected") - rejected_before {
            3 => Ok(()),
            n => Err(format!("{n} counted")),
        },
    );
    let new = target.log_since(offset);
    assert!(
        new.contains("rejected packet") && new.contains("not a rumor packet"),
        "the log names the first rejection: {new}"
    );

    // A push-pull stream that ends early: a valid header announcing 100 bytes, then 3 bytes,
    // then the connection closes.
    let offset = target.log_len();
    let mut tcp = TcpStream::connect(target.addr()).expect("connect to the push-pull port");
    let version = rumor::cluster::wire::PROTOCOL_VERSION;
    tcp.write_all(&[0x52, version, 0x02, 0, 0, 0, 100, 1, 2, 3])
        .expect("write");
    tcp.shutdown(Shutdown::Both).expect("shutdown");
    drop(tcp);
    wait_for(
        Duration::from_secs(10),
        "the agent to log how the push-pull stream was cut",
        || {
            let new = target.log_since(offset);
            if new.contains("truncated stream: it ended after 10 of 107 bytes") {
                Ok(())
            } else {
                Err(format!("new log lines: {new:?}"))
            }
        },
    );

    // The agent still serves and the cluster still converges.
    agents.push(Agent::start(
        "bad-4",
        &["--join", &target.addr().to_string()],
    ));
    let want = all_alive(&agents);
    wait_for(CONVERGE, "the cluster to converge after bad input", || {
        check_view(&refs(&agents), &want)
    });
    let target = &mut agents[1];
    assert!(target.is_running(), "the agent exited after bad input");

    // An event larger than max_event_bytes (default 1024) is refused, naming the limit.
    let payload = "x".repeat(2000);
    let out = target.cli(&["event", "big", &payload]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a 2000-byte event was accepted");
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    assert!(
        err.contains("1024"),
        "the error does not state the limit: {err}"
    );
}

/// One of the cluster counters of `rumor info --format json`.
fn counter(agent: &Agent, name: &str) -> u64 {
    agent.counter(name).unwrap_or_else(|e| panic!("{e}"))
}
