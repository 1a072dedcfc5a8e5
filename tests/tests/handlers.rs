//! Handlers and queries end to end: real agents running real shell handlers, driven through
//! the CLI. Handlers record what they got into files named after `$SERF_SELF_NAME`.

use std::path::Path;
use std::time::{Duration, Instant};

use rumor_tests::bench::host::threads;
use rumor_tests::{Agent, cluster_slot, start_cluster, test_tempdir, wait_for, write_file};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn info(agent: &Agent) -> Value {
    agent.info().unwrap_or_else(|e| panic!("{e}"))
}

fn handler_status(agent: &Agent, name: &str) -> Value {
    info(agent)["handlers"]
        .as_array()
        .expect("handlers array")
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no handler {name} in rumor info"))
        .clone()
}

#[test]
fn a_user_event_runs_each_nodes_handler_exactly_once_with_serfs_env_and_stdin() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let out = dir.path().display().to_string();
    let handler = format!(
        "user:deploy=printf '%s %s\\n' \"$SERF_USER_EVENT\" \"$SERF_USER_LTIME\" >> {out}/$SERF_SELF_NAME; cat >> {out}/$SERF_SELF_NAME"
    );
    let agents = start_cluster(&["ev-1", "ev-2", "ev-3"], CONVERGE, |_| {
        vec!["--event-handler".into(), handler.clone()]
    });
    let sent: Value =
        serde_json::from_str(&agents[1].cli_ok(&["event", "deploy", "v1", "--format", "json"]))
            .expect("event JSON");
    let ltime = sent["ltime"].as_u64().expect("ltime");
    let want = format!("deploy {ltime}\nv1\n");
    for a in &agents {
        let file = dir.path().join(a.name());
        wait_for(CONVERGE, "the handler to run on every node", || {
            let got = read(&file);
            if got == want {
                Ok(())
            } else {
                Err(format!("{}: {got:?}", a.name()))
            }
        });
    }
    // A later event proves the handlers are idle: nothing ran twice in between.
    agents[0].cli_ok(&["event", "deploy", "v2"]);
    for a in &agents {
        let file = dir.path().join(a.name());
        wait_for(CONVERGE, "the second event", || {
            let got = read(&file);
            if got.ends_with("v2\n") {
                Ok(())
            } else {
                Err(got)
            }
        });
        let got = read(&file);
        assert_eq!(got.matches("v1\n").count(), 1, "{}: {got}", a.name());
    }
}

#[test]
fn member_events_reach_handlers_in_serfs_stdin_format_byte_for_byte() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let record = dir.path().join("ma-1");
    let handler = format!(
        "member-join,member-leave=echo \"$SERF_EVENT\" >> {}; cat >> {}",
        record.display(),
        record.display()
    );
    let seed = Agent::start("ma-1", &["--event-handler", &handler, "--tag", "role=lb"]);
    let joiner = Agent::start(
        "ma-2",
        &[
            "--join",
            &seed.addr().to_string(),
            "--tag",
            "role=web",
            "--tag",
            "dc=east",
            "--tag",
            "note=tab\there",
        ],
    );
    let line = "ma-2\t127.0.0.1\tweb\tdc=east,note=tab\\there,role=web\n";
    // As with Serf, the first event a node's handler sees is its own node joining.
    let joined = format!("member-join\nma-1\t127.0.0.1\tlb\trole=lb\nmember-join\n{line}");
    wait_for(CONVERGE, "the member-join handler run", || {
        let got = read(&record);
        if got == joined { Ok(()) } else { Err(got) }
    });
    let mut joiner = joiner;
    joiner.cli_ok(&["leave"]);
    joiner.wait_exit(Duration::from_secs(10));
    let both = format!("{joined}member-leave\n{line}");
    wait_for(CONVERGE, "the member-leave handler run", || {
        let got = read(&record);
        if got == both { Ok(()) } else { Err(got) }
    });
}

#[test]
fn a_hung_handler_is_killed_with_its_children_and_does_not_delay_others() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path().display().to_string();
    let config = dir.path().join("rumor.toml");
    write_file(
        &config,
        &format!(
            r#"
[[handler]]
name = "slow"
events = ["user:slow"]
command = "echo start >> {d}/slow.log; sleep 100 & echo $! > {d}/child.pid; sleep 60; echo finished >> {d}/slow.log"
timeout = "5s"

[[handler]]
name = "fast"
events = ["user:fast"]
command = "echo ran >> {d}/fast.log"
"#
        ),
    );
    let agent = Agent::start("hung-1", &["--config", &config.to_string_lossy()]);
    agent.cli_ok(&["event", "slow"]);
    let pid_file = dir.path().join("child.pid");
    wait_for(CONVERGE, "the slow handler to start", || {
        read(&pid_file)
            .trim()
            .parse::<u32>()
            .map_err(|e| e.to_string())
    });
    let child: u32 = read(&pid_file).trim().parse().unwrap();

    // The fast handler runs while the slow one is still inside its run.
    agent.cli_ok(&["event", "fast"]);
    wait_for(CONVERGE, "the fast handler to run", || {
        if read(&dir.path().join("fast.log")) == "ran\n" {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });
    let slow = handler_status(&agent, "slow");
    assert_eq!(
        slow["timeouts"], 0,
        "the fast handler waited for the slow one: {slow}"
    );
    assert_eq!(slow["running"], true, "{slow}");

    // The slow run is killed at its timeout, background child included.
    wait_for(CONVERGE, "the slow handler's timeout", || {
        match handler_status(&agent, "slow")["timeouts"].as_u64() {
            Some(1) => Ok(()),
            other => Err(format!("timeouts = {other:?}")),
        }
    });
    wait_for(
        Duration::from_secs(5),
        "the background child to be gone",
        || {
            if Path::new(&format!("/proc/{child}")).exists() {
                Err(format!("pid {child} still exists"))
            } else {
                Ok(())
            }
        },
    );
    assert!(!read(&dir.path().join("slow.log")).contains("finished"));
    assert!(agent.log().contains("timed out"), "the timeout is logged");

    // The next event for the same handler still runs.
    agent.cli_ok(&["event", "slow"]);
    wait_for(CONVERGE, "the slow handler to run again", || {
        let got = read(&dir.path().join("slow.log"));
        if got == "start\nstart\n" {
            Ok(())
        } else {
            Err(got)
        }
    });
}

#[test]
fn queries_return_every_answer_without_waiting_for_the_timeout() {
    let _slot = cluster_slot();
    let agents = start_cluster(&["q-web-1", "q-web-2", "q-db-1"], CONVERGE, |name| {
        let role = if name.contains("db") { "db" } else { "web" };
        vec![
            "--tag".into(),
            format!("role={role}"),
            "--event-handler".into(),
            "query:uptime=echo \"up on $SERF_SELF_NAME\"; cat".into(),
        ]
    });
    let started = Instant::now();
    let out = agents[0].cli_ok(&[
        "query",
        "uptime",
        "ping",
        "--timeout",
        "30s",
        "--format",
        "json",
    ]);
    let took = started.elapsed();
    let result: Value = serde_json::from_str(&out).expect("query JSON");
    for a in &agents {
        assert_eq!(
            result["responses"][a.name()],
            format!("up on {}\nping\n", a.name()),
            "{result}"
        );
    }
    assert_eq!(result["acks"].as_array().map(Vec::len), Some(3), "{result}");
    // Bounded well below the timeout, not tightly: a loaded machine starts the CLI and the
    // three shells slowly, and waiting out the timeout is what must not happen.
    assert!(
        took < Duration::from_secs(10),
        "rumor query took {took:?} with a 30 s timeout"
    );

    let out = agents[0].cli_ok(&[
        "query",
        "uptime",
        "--tag",
        "role=db",
        "--timeout",
        "30s",
        "--format",
        "json",
    ]);
    let result: Value = serde_json::from_str(&out).expect("query JSON");
    let responders: Vec<&String> = result["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .collect();
    assert_eq!(responders, ["q-db-1"], "{result}");

    // Internal query names are not for the public API.
    let refused = agents[0].cli(&["query", "_rumor_ping"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("reserved"));
}

#[test]
fn a_missing_handler_command_is_reported_per_run_and_the_agent_keeps_going() {
    let _slot = cluster_slot();
    let agent = Agent::start(
        "missing-1",
        &["--event-handler", "user=/nonexistent/handler.sh"],
    );
    agent.cli_ok(&["event", "one"]);
    agent.cli_ok(&["event", "two"]);
    wait_for(CONVERGE, "two failed runs", || {
        match handler_status(&agent, "event-handler-1")["failures"].as_u64() {
            Some(2) => Ok(()),
            other => Err(format!("failures = {other:?}")),
        }
    });
    let last = handler_status(&agent, "event-handler-1")["last"].clone();
    assert_eq!(last["exit_code"], 127, "{last}");
    let log = agent.log();
    assert!(
        log.contains("event-handler-1") && log.contains("/nonexistent/handler.sh"),
        "the log names the handler and what failed"
    );
    // Still serving.
    agent.cli_ok(&["members"]);
}

#[test]
fn the_agent_runs_above_its_handlers_and_handlers_keep_the_original_priority() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return rumor_tests::skip_or_fail("lowering a nice value needs root");
    }
    const SCHED_OTHER: i32 = 0;
    const SCHED_RR: i32 = 2;
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let ours = threads(std::process::id())
        .first()
        .expect("this test's own nice value")
        .nice;
    // The handler records its own nice value and scheduling policy.
    let record = |name: &str| {
        format!(
            "user:prio=echo $(nice) $(cut -d' ' -f41 /proc/$$/stat) > {}/{name}.tmp && mv {0}/{name}.tmp {0}/{name}",
            dir.path().display()
        )
    };
    let raised = Agent::start("prio-1", &["--event-handler", &record("raised")]);
    let plain = Agent::start(
        "prio-2",
        &[
            "--priority-boost",
            "0",
            "--realtime-priority",
            "0",
            "--event-handler",
            &record("plain"),
        ],
    );
    raised.cli_ok(&["event", "prio"]);
    plain.cli_ok(&["event", "prio"]);
    for name in ["raised", "plain"] {
        wait_for(
            CONVERGE,
            "the handler to record its priority",
            || match read(&dir.path().join(name)).trim() {
                "" => Err(format!("{name}: nothing recorded yet")),
                got => {
                    assert_eq!(
                        got,
                        format!("{ours} {SCHED_OTHER}"),
                        "{name}: handlers run at the original priority, as normal tasks"
                    );
                    Ok(())
                }
            },
        );
    }

    // Defaults: the gossip thread (the main one) 5 nice levels up and real-time; the threads
    // it made for handlers and disk writes back at the original priority, as normal tasks.
    let pid = raised.pid().expect("running");
    let all = threads(pid);
    let gossip = all.iter().find(|t| t.tid == pid).expect("the main thread");
    assert_eq!(
        (gossip.nice, gossip.policy),
        ((ours - 5).max(-20), SCHED_RR),
        "{all:?}"
    );
    for name in ["rumor-handlers", "rumor-snapshot", "rumor-handled"] {
        let t = all.iter().find(|t| t.name == name).expect(name);
        assert_eq!((t.nice, t.policy), (ours, SCHED_OTHER), "{all:?}");
    }
    assert!(
        all.iter()
            .filter(|t| t.tid != pid)
            .all(|t| t.policy == SCHED_OTHER),
        "only the gossip thread is real-time: {all:?}"
    );
    let log = raised.log();
    assert!(log.contains("priority boost applied"), "{log}");
    assert!(log.contains("real-time scheduling applied"), "{log}");

    // Both off: every thread as the agent was started.
    let all = threads(plain.pid().expect("running"));
    assert!(
        !all.is_empty()
            && all
                .iter()
                .all(|t| (t.nice, t.policy) == (ours, SCHED_OTHER)),
        "nothing raised: {all:?}"
    );
    let log = plain.log();
    assert!(log.contains("priority boost off"), "{log}");
    assert!(log.contains("real-time scheduling off"), "{log}");
}

#[test]
fn handlers_reload_from_the_config_file() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path().display().to_string();
    let config = dir.path().join("rumor.toml");
    let one = format!(
        "[[handler]]\nname = \"first\"\nevents = [\"user\"]\ncommand = \"echo first >> {d}/out\"\n"
    );
    write_file(&config, &one);
    let agent = Agent::start("reload-1", &["--config", &config.to_string_lossy()]);
    let two = format!(
        "{one}\n[[handler]]\nname = \"second\"\nevents = [\"user\"]\ncommand = \"echo second >> {d}/out\"\n"
    );
    write_file(&config, &two);
    let said = agent.cli_ok(&["reload"]);
    assert!(said.contains("2 handlers"), "{said}");
    agent.cli_ok(&["event", "go"]);
    let out = dir.path().join("out");
    wait_for(CONVERGE, "both handlers to run", || {
        let mut got: Vec<String> = read(&out).lines().map(String::from).collect();
        got.sort();
        if got == ["first", "second"] {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    });
    // A broken file is refused and the running handlers stay.
    write_file(
        &config,
        "[[handler]]\nevents = [\"user:\"]\ncommand = \"x\"\n",
    );
    let refused = agent.cli(&["reload"]);
    assert!(
        !refused.status.success(),
        "a bad handler file must not reload"
    );
    assert_eq!(info(&agent)["handlers"].as_array().map(Vec::len), Some(2));
}
