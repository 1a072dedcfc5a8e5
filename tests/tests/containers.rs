//! Container deploys (docs/containers.md) with real agents, the built-in `docker-deploy`
//! plugin and the real Docker Engine, on images built here from Debian's static busybox
//! (never pulled). Several agents share the one Engine, each managing the containers labelled
//! with its node name. Without the Engine (or busybox-static) the tests skip, unless
//! RUMOR_REQUIRE_ALL=1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumor_tests::docker::{Behaviour, TestImages, containers_of, docker, docker_missing};
use rumor_tests::services::http_get;
use rumor_tests::{Agent, Control, cluster_slot, skip_or_fail, start_cluster, wait_for};

const CONVERGE: Duration = Duration::from_secs(60);

fn docker_here() -> bool {
    match docker_missing() {
        Some(why) => {
            skip_or_fail(&format!("the container deploy tests need Docker: {why}"));
            false
        }
        None => true,
    }
}

/// Agents (web hosts tagged `role=web` running the plugin, and an observer without it), then
/// the images: dropped in that order, so no agent restarts what the cleanup removes.
struct Fleet {
    agents: Vec<Agent>,
    web: Vec<String>,
    images: TestImages,
}

impl Fleet {
    fn start(test: &str, webs: usize, settings: &[&str]) -> Fleet {
        Fleet::start_with(test, webs, settings, &[])
    }

    /// With `observer_args` for the observer's agent (a handler of its own).
    fn start_with(test: &str, webs: usize, settings: &[&str], observer_args: &[&str]) -> Fleet {
        let pid = std::process::id();
        let observer = format!("{test}-lb-{pid}");
        let web: Vec<String> = (1..=webs).map(|i| format!("{test}-w{i}-{pid}")).collect();
        let mut names = vec![observer.as_str()];
        names.extend(web.iter().map(String::as_str));
        let images = TestImages::build(
            test,
            &[
                ("v1", Behaviour::Serve("v1")),
                ("v2", Behaviour::Serve("v2")),
                ("v3", Behaviour::Hang),
            ],
            &names,
        );
        let agents = start_cluster(&names, CONVERGE, |name| {
            if name.contains("-w") {
                vec!["--tag".into(), "role=web".into()]
            } else {
                observer_args.iter().map(|s| s.to_string()).collect()
            }
        });
        let mut install = vec![
            "plugin",
            "install",
            "docker-deploy",
            "--set",
            "app=web",
            "--set",
            "selector=role=web",
            "--set",
            "container_port=8080",
            "--set",
            "host_ip=127.0.0.1",
        ];
        for s in settings {
            install.extend(["--set", s]);
        }
        for agent in &agents[1..] {
            agent.cli_ok(&install);
        }
        Fleet {
            agents,
            web,
            images,
        }
    }

    fn observer(&self) -> &Agent {
        &self.agents[0]
    }

    fn deploy(&self, tag: &str) {
        let payload = format!("web {}", self.images.image(tag));
        self.observer().cli_ok(&["event", "deploy", &payload]);
    }

    /// Every web host's tags, as the observer sees them.
    fn tags(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        tags_of(self.observer().control(), &self.web)
    }

    /// Waits until every web host publishes `version` as deployed and serves it at its port.
    fn wait_serving(&self, version: &str) {
        wait_for(
            CONVERGE,
            &format!("every web host serving {version}"),
            || {
                for (host, tags) in self.tags() {
                    let state = tags.get("web_deploy").cloned().unwrap_or_default();
                    if state != format!("ok:{version}") {
                        return Err(format!("{host}: web_deploy={state}"));
                    }
                    let answer = port_of(&tags).map(http_get).ok_or("no web_port")?;
                    if answer.as_deref() != Ok(&format!("{version}\n")) {
                        return Err(format!("{host} answers {answer:?}"));
                    }
                }
                Ok(())
            },
        );
    }
}

fn tags_of(control: &Control, hosts: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let members = control.members().unwrap_or_default();
    hosts
        .iter()
        .map(|h| {
            let tags = members
                .iter()
                .find(|m| &m.name == h)
                .map(|m| m.tags.clone())
                .unwrap_or_default();
            (h.clone(), tags)
        })
        .collect()
}

fn port_of(tags: &BTreeMap<String, String>) -> Option<SocketAddr> {
    let port: u16 = tags.get("web_port")?.parse().ok()?;
    Some(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// What a client probing every web host at the port its tags name saw, and when each host's
/// `web_version` changed.
#[derive(Default)]
struct Probes {
    failures: Vec<String>,
    requests: usize,
    /// (host, version) in the order the changes were seen.
    switches: Vec<(String, String)>,
    /// The most hosts seen starting a new container at once.
    most_starting: usize,
}

/// A client probing each host in a loop at the port its tags name at that moment.
struct Prober {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Probes>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(control: Control, hosts: Vec<String>) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Probes::default()));
        let thread = {
            let (stop, probes) = (stop.clone(), probes.clone());
            std::thread::spawn(move || {
                let mut last: BTreeMap<String, String> = BTreeMap::new();
                let end = Instant::now() + Duration::from_secs(600);
                // One more pass after the stop: the caller stops once it saw the final state,
                // which the last pass must record too.
                let mut stopping = false;
                while !stopping && Instant::now() < end {
                    stopping = stop.load(Ordering::Relaxed);
                    let tags = tags_of(&control, &hosts);
                    let mut p = probes.lock().unwrap();
                    let starting = tags
                        .values()
                        .filter(|t| {
                            t.get("web_deploy")
                                .is_some_and(|s| s.starts_with("starting:"))
                        })
                        .count();
                    p.most_starting = p.most_starting.max(starting);
                    for (host, tags) in &tags {
                        let version = tags.get("web_version").cloned().unwrap_or_default();
                        if last.get(host) != Some(&version) {
                            p.switches.push((host.clone(), version.clone()));
                            last.insert(host.clone(), version.clone());
                        }
                        p.requests += 1;
                        match port_of(tags).map(http_get) {
                            Some(Ok(body)) if body.trim() == version => {}
                            other => p.failures.push(format!("{host} ({version}): {other:?}")),
                        }
                    }
                }
            })
        };
        Prober {
            stop,
            probes,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.probes.lock().unwrap())
    }
}

/// Issue 19, test 1: a deploy starts containers on exactly the `role=web` hosts; the next
/// version replaces them one host at a time, blue/green, with no gap for a client that follows
/// the tags, and the tag history shows the batches in order.
#[test]
fn deploys_on_the_selected_hosts_then_rolls_one_at_a_time_without_a_gap() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let fleet = Fleet::start("roll", 3, &["max_parallel=1", "drain=1s"]);
    fleet.deploy("v1");
    fleet.wait_serving("v1");
    for host in &fleet.web {
        assert_eq!(containers_of(host, None).len(), 1, "{host}: one container");
    }
    assert!(
        containers_of(fleet.observer().name(), None).is_empty(),
        "the observer runs none"
    );

    let prober = Prober::start(fleet.observer().control().clone(), fleet.web.clone());
    fleet.deploy("v2");
    fleet.wait_serving("v2");
    let probes = prober.finish();
    assert!(
        probes.requests > 30,
        "the client probed only {} times",
        probes.requests
    );
    assert!(
        probes.failures.is_empty(),
        "the client saw gaps: {:?}",
        probes.failures
    );
    // At most one (a slow prober can miss a short `starting:`; the switch order below shows
    // one host after the other either way).
    assert!(
        probes.most_starting <= 1,
        "max_parallel = 1: one host at a time, saw {}",
        probes.most_starting
    );
    let order: Vec<&str> = probes
        .switches
        .iter()
        .filter(|(_, v)| v == "v2")
        .map(|(h, _)| h.as_str())
        .collect();
    let expected: Vec<&str> = fleet.web.iter().map(String::as_str).collect();
    assert_eq!(order, expected, "the batches in rank order");
    // After the drain the old containers are gone.
    for host in &fleet.web {
        wait_for(CONVERGE, "the old container removed", || {
            let all = containers_of(host, None);
            (all.len() == 1 && containers_of(host, Some("v2")).len() == 1)
                .then_some(())
                .ok_or(format!("{host}: {} containers", all.len()))
        });
    }
}

/// Issue 19, test 2: a version that never gets ready fails on the first host, which keeps the
/// old container serving and says why in its tags and `rumor deploy status`; no other host
/// starts it. The same version again changes nothing; the previous one rolls back.
#[test]
fn a_broken_version_halts_the_rollout_and_the_previous_one_rolls_back() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    // Ready by HTTP here (a GET of / answering 2xx); the other tests use the default TCP.
    let fleet = Fleet::start(
        "halt",
        3,
        &[
            "max_parallel=1",
            "drain=1s",
            "ready_timeout=3s",
            "readiness=http:/",
        ],
    );
    fleet.deploy("v2");
    fleet.wait_serving("v2");
    let before: Vec<Vec<String>> = fleet.web.iter().map(|h| containers_of(h, None)).collect();

    fleet.deploy("v3");
    let (first, rest) = (&fleet.web[0], &fleet.web[1..]);
    wait_for(
        CONVERGE,
        "the first host failing v3, the others halting",
        || {
            let tags = fleet.tags();
            let state = |h: &String| tags[h].get("web_deploy").cloned().unwrap_or_default();
            if state(first) != "failed:v3" {
                return Err(format!("{first}: {}", state(first)));
            }
            match rest.iter().find(|h| state(h) != "halted:v3") {
                Some(h) => Err(format!("{h}: {}", state(h))),
                None => Ok(()),
            }
        },
    );
    let tags = fleet.tags();
    assert_eq!(tags[first]["web_version"], "v2");
    let reason = &tags[first]["web_reason"];
    assert!(reason.contains("not ready within"), "{reason}");
    assert_eq!(http_get(port_of(&tags[first]).unwrap()).unwrap(), "v2\n");
    for host in &fleet.web {
        assert!(
            containers_of(host, Some("v3")).is_empty(),
            "{host} has a v3 container"
        );
    }
    let status = fleet.observer().cli_ok(&["deploy", "status", "web"]);
    assert!(
        status.contains("failed:v3") && status.contains("not ready within"),
        "{status}"
    );
    assert_eq!(status.matches("halted:v3").count(), 2, "{status}");
    let json = fleet
        .observer()
        .cli_ok(&["deploy", "status", "web", "--format", "json"]);
    let hosts: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(hosts.as_array().map(Vec::len), Some(3), "{json}");

    // The serving version again: nothing restarts, the failure is cleared.
    fleet.deploy("v2");
    fleet.wait_serving("v2");
    let after: Vec<Vec<String>> = fleet.web.iter().map(|h| containers_of(h, None)).collect();
    assert_eq!(
        before, after,
        "a deploy of the serving version starts nothing"
    );

    // Rollback: the previous image is still there.
    let started = Instant::now();
    fleet.deploy("v1");
    fleet.wait_serving("v1");
    eprintln!(
        "rollback to v1 on 3 hosts one by one: {:?}",
        started.elapsed()
    );
}

/// Issue 19, test 3: after kill -9 and a restart the agent adopts its container (no second
/// one); a container removed behind its back is started again, while it runs and at start.
#[test]
fn a_restarted_agent_adopts_its_container_and_recreates_a_deleted_one() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let mut fleet = Fleet::start("adopt", 1, &[]);
    let host = fleet.web[0].clone();
    let json = format!(r#"{{"app":"web","image":"{}"}}"#, fleet.images.image("v1"));
    fleet.observer().cli_ok(&["event", "deploy", &json]);
    fleet.wait_serving("v1");
    let original = containers_of(&host, None);
    assert_eq!(original.len(), 1);

    fleet.agents[1].kill9();
    fleet.agents[1].restart();
    fleet.wait_serving("v1");
    assert_eq!(
        containers_of(&host, None),
        original,
        "adopted, not duplicated"
    );

    // Removed while the agent runs: started again from the record.
    docker(&["rm", "-f", &original[0]]);
    let recreated = wait_for(CONVERGE, "the removed container started again", || {
        let now = containers_of(&host, Some("v1"));
        let why = format!("{now:?}");
        (now.len() == 1 && now != original)
            .then_some(now)
            .ok_or(why)
    });
    fleet.wait_serving("v1");

    // Removed while the agent is down: started again when it starts.
    fleet.agents[1].kill9();
    docker(&["rm", "-f", &recreated[0]]);
    fleet.agents[1].restart();
    fleet.wait_serving("v1");
    let third = containers_of(&host, None);
    assert_eq!(third.len(), 1);
    assert_ne!(third, recreated);
}

/// Issue 19, test 5: a payload naming an unknown app, a malformed image reference and an image
/// that is not on the host: a log line, a failure tag (for this app), nothing started or
/// stopped.
#[test]
fn bad_deploys_are_reported_and_change_nothing() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let fleet = Fleet::start("bad", 1, &[]);
    let web = &fleet.agents[1];
    fleet.deploy("v1");
    fleet.wait_serving("v1");
    let running = containers_of(&fleet.web[0], None);

    fleet
        .observer()
        .cli_ok(&["event", "deploy", "nosuch demo:v1"]);
    wait_for(CONVERGE, "the unknown app in the log", || {
        let log = web.log();
        log.contains("\"nosuch\", which no docker handler on this node manages")
            .then_some(())
            .ok_or("not yet".to_string())
    });

    let cases = [
        (
            "web Not/An:Image!".to_string(),
            "failed:invalid",
            "malformed",
        ),
        (
            format!("web {}", fleet.images.image("nope")),
            "failed:nope",
            "is not on this host",
        ),
    ];
    for (payload, state, reason) in cases {
        fleet.observer().cli_ok(&["event", "deploy", &payload]);
        wait_for(CONVERGE, &format!("{state} after {payload:?}"), || {
            let tags = &fleet.tags()[&fleet.web[0]];
            let got = tags.get("web_deploy").cloned().unwrap_or_default();
            let why = tags.get("web_reason").cloned().unwrap_or_default();
            (got == state && why.contains(reason))
                .then_some(())
                .ok_or(format!("web_deploy={got} web_reason={why}"))
        });
        assert!(web.log().contains(reason), "a log line says {reason:?}");
        assert_eq!(
            containers_of(&fleet.web[0], None),
            running,
            "nothing started or stopped"
        );
        let tags = &fleet.tags()[&fleet.web[0]];
        assert_eq!(tags["web_version"], "v1");
        assert_eq!(http_get(port_of(tags).unwrap()).unwrap(), "v1\n");
    }
}

/// `readiness = "command:…"` (a health check's `command` kind aimed at the new container):
/// the command is told where the container is, only its exit 0 lets the host switch, and a
/// failing command's output is the failure's reason.
#[test]
fn a_readiness_command_is_told_the_container_and_decides() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let dir = rumor_tests::test_tempdir();
    let (gate, attempts) = (dir.path().join("open"), dir.path().join("attempts"));
    let readiness = format!(
        "readiness=command:echo \"$RUMOR_APP $RUMOR_CONTAINER_IP:$RUMOR_CONTAINER_PORT \
         $RUMOR_HOST_PORT\" >> {attempts}; test -e {gate} || {{ echo gate closed >&2; exit 1; }}",
        attempts = attempts.display(),
        gate = gate.display()
    );
    let fleet = Fleet::start("cmd", 1, &["ready_timeout=3s", &readiness]);
    let host = &fleet.web[0];

    // The gate is closed: the command fails until ready_timeout, and says why.
    fleet.deploy("v1");
    wait_for(CONVERGE, "v1 failing its readiness command", || {
        let tags = &fleet.tags()[host];
        let state = tags.get("web_deploy").cloned().unwrap_or_default();
        (state == "failed:v1").then_some(()).ok_or(state)
    });
    let reason = fleet.tags()[host]["web_reason"].clone();
    assert!(
        reason.contains("not ready within 3s: readiness command exited with code 1: gate closed"),
        "{reason}"
    );
    assert!(
        containers_of(host, Some("v1")).is_empty(),
        "the failed container is removed"
    );

    // Open: the next version switches, and the command saw where it runs.
    std::fs::write(&gate, "").unwrap();
    fleet.deploy("v2");
    fleet.wait_serving("v2");
    let tags = &fleet.tags()[host];
    let seen = std::fs::read_to_string(&attempts).unwrap();
    let last = seen.lines().last().expect("the command ran");
    let (app, rest) = last.split_once(' ').unwrap();
    let (container, host_port) = rest.split_once(' ').unwrap();
    assert_eq!(app, "web");
    assert_eq!(host_port, tags["web_port"], "{seen}");
    let container: SocketAddr = container.parse().unwrap_or_else(|e| panic!("{last}: {e}"));
    assert_eq!(container.port(), 8080);
    assert_eq!(
        http_get(container).unwrap(),
        "v2\n",
        "the container's own address"
    );
}

/// A host of the app that never takes its turn (here its plugin was removed; a stuck agent
/// looks the same) halts the later batches after `turn_timeout`, naming it; they keep serving.
#[test]
fn a_host_that_never_takes_its_turn_halts_the_rest_after_turn_timeout() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let fleet = Fleet::start("turn", 2, &[]);
    fleet.deploy("v1");
    fleet.wait_serving("v1");
    let (first, second) = (&fleet.web[0], &fleet.web[1]);
    // Short only now: on a slow machine the first host can take a while to start v1.
    fleet.agents[2].cli_ok(&["plugin", "set", "docker-deploy", "turn_timeout=2s"]);
    fleet.agents[1].cli_ok(&["plugin", "remove", "docker-deploy"]);

    fleet.deploy("v2");
    wait_for(CONVERGE, &format!("{second} halting"), || {
        let tags = &fleet.tags()[second];
        let state = tags.get("web_deploy").cloned().unwrap_or_default();
        (state == "halted:v2")
            .then_some(())
            .ok_or(format!("web_deploy={state}"))
    });
    let tags = &fleet.tags()[second];
    let reason = &tags["web_reason"];
    assert!(
        reason.contains(first.as_str()) && reason.contains("within turn_timeout 2s"),
        "{reason}"
    );
    assert_eq!(http_get(port_of(tags).unwrap()).unwrap(), "v1\n");
    assert!(containers_of(second, Some("v2")).is_empty());
    let status = fleet.observer().cli_ok(&["deploy", "status", "web"]);
    assert!(status.contains("halted:v2"), "{status}");
}

/// A serving container that dies is reported like a failing check: `health_web=critical` in
/// the host's tags, a log line, and the notify event, here to a handler on another node.
#[test]
fn a_dead_container_is_reported_in_tags_log_and_notify_event() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let dir = rumor_tests::test_tempdir();
    let notes = dir.path().join("died.json");
    let handler = format!("user:web-died=cat >> {}", notes.display());
    let fleet = Fleet::start_with(
        "dies",
        1,
        &["restart=no", "notify=web-died"],
        &["--event-handler", &handler],
    );
    fleet.deploy("v1");
    fleet.wait_serving("v1");
    let host = &fleet.web[0];
    let id = containers_of(host, None).remove(0);
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &id]);
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(CONVERGE, "health_web=critical seen by the observer", || {
        let tags = &fleet.tags()[host];
        let health = tags.get("health_web").cloned().unwrap_or_default();
        (health == "critical").then_some(()).ok_or(health)
    });
    let note: serde_json::Value = wait_for(CONVERGE, "the notify event on the observer", || {
        let text = std::fs::read_to_string(&notes).unwrap_or_default();
        serde_json::from_str(text.trim()).map_err(|e| format!("{text:?}: {e}"))
    });
    assert_eq!(note["node"], host.as_str());
    assert_eq!(note["app"], "web");
    assert_eq!(note["version"], "v1");
    assert_eq!(note["exit_code"], "137");
    assert!(fleet.agents[1].log().contains("the app's container died"));
}

/// The figures of docs/performance.md ("Container deploys"), not a pass/fail test: time from
/// `rumor event deploy` to every host serving the new version, 3 hosts one by one and all at
/// once, against the containers' own start-to-ready time (from the agents' logs). Run with
/// `cargo test -p rumor-tests --test containers -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_deploy_times() {
    if !docker_here() {
        return;
    }
    let _slot = cluster_slot();
    let fleet = Fleet::start("measure", 3, &["max_parallel=1", "drain=1s"]);
    fleet.deploy("v1");
    fleet.wait_serving("v1");
    let mut rounds = Vec::new();
    let mut current = "1";
    for (parallel, version) in [("1", "v2"), ("100%", "v1"), ("1", "v2"), ("100%", "v1")] {
        let marks: Vec<usize> = fleet.agents[1..].iter().map(Agent::log_len).collect();
        if parallel != current {
            current = parallel;
            for agent in &fleet.agents[1..] {
                let set = format!("max_parallel={parallel}");
                agent.cli_ok(&["plugin", "set", "docker-deploy", &set]);
            }
            // The changed handler adopts its container again before it takes deploys.
            for (agent, mark) in fleet.agents[1..].iter().zip(&marks) {
                wait_for(CONVERGE, "the handler reloaded", || {
                    let log = agent.log_since(*mark);
                    log.contains("adopted")
                        .then_some(())
                        .ok_or("not yet".into())
                });
            }
        }
        let started = Instant::now();
        fleet.deploy(version);
        fleet.wait_serving(version);
        let total = started.elapsed();
        let ready: Vec<Duration> = fleet.agents[1..]
            .iter()
            .zip(&marks)
            .filter_map(|(a, mark)| ready_after(&a.log_since(*mark)))
            .collect();
        rounds.push((parallel, total, ready));
    }
    for (parallel, total, ready) in rounds {
        let batches = if parallel == "1" { 3 } else { 1 };
        let own: Duration = if batches == 3 {
            ready.iter().sum()
        } else {
            ready.iter().copied().max().unwrap_or_default()
        };
        let overhead = total.saturating_sub(own) / batches;
        eprintln!(
            "max_parallel={parallel}: deploy to all serving {total:.2?}; containers' own start-to-ready {ready:.2?}; overhead per batch {overhead:.2?}"
        );
    }
}

/// The `ready_after` of the last "new container ready" line of an agent's log.
fn ready_after(log: &str) -> Option<Duration> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("new container ready"))?;
    let value = line
        .split("ready_after=")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(us) = value.strip_suffix("µs") {
        (us, 1e-6)
    } else {
        (value.strip_suffix('s')?, 1.0)
    };
    Some(Duration::from_secs_f64(number.parse::<f64>().ok()? * scale))
}
