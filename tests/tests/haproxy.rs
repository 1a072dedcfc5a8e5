//! The built-in haproxy plugin against a real haproxy 2.6 in master-worker mode on 127.0.0.1,
//! in front of web backends (one `web-backend` process per rumor node). While a client sends
//! requests in a loop, backends join, leave gracefully, fail (kill -9 of the web server and its
//! agent) and come back; no request may fail but one in flight at the instant of a kill, the
//! final server list is the alive set, and a burst of joins is one reload. A backend whose
//! health check fails leaves the list while it is alive, and comes back when it passes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumor_tests::services::{Haproxy, WebNode, http_get, program_available};
use rumor_tests::{Agent, cluster_slot, skip_or_fail, test_tempdir, wait_for, write_file};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(20);
const WEB_BACKEND: &str = env!("CARGO_BIN_EXE_web-backend");

/// Whether haproxy and socat are here; skips (fails under RUMOR_REQUIRE_ALL) when not.
fn haproxy_here() -> bool {
    for program in ["haproxy", "socat"] {
        if !program_available(program) {
            skip_or_fail(&format!(
                "{program} is not installed (apt-get install {program})"
            ));
            return false;
        }
    }
    true
}

/// A web node joined through `join`.
fn web(name: &str, join: &Agent) -> WebNode {
    WebNode::start(Path::new(WEB_BACKEND), name, join, &[])
}

/// When a request ended, and the backend that answered it (or what went wrong).
type Outcome = (Instant, Result<String, String>);

/// A client sending `GET /` to the frontend in a loop, recording every outcome.
struct Client {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    fn start(frontend: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, results) = (stop.clone(), results.clone());
            std::thread::spawn(move || {
                // Bounded: at most ten minutes of requests whatever happens to the test.
                let end = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let result = http_get(frontend);
                    results.lock().unwrap().push((Instant::now(), result));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Client {
            stop,
            results,
            thread: Some(thread),
        }
    }

    /// The backends that answered the last `n` requests (fewer if there were fewer).
    fn served_lately(&self, n: usize) -> BTreeSet<String> {
        let results = self.results.lock().unwrap();
        results[results.len().saturating_sub(n)..]
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().cloned())
            .collect()
    }

    fn requests(&self) -> usize {
        self.results.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.results.lock().unwrap())
    }
}

/// The server names of the config haproxy runs.
fn configured_servers(config: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(config)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until the config lists `want` and the client's latest requests were served by
/// exactly those (round robin: a few requests per server show them all).
fn wait_serving(config: &Path, client: &Client, want: &[&str]) {
    let want = names(want);
    wait_for(CONVERGE, &format!("the config to list {want:?}"), || {
        let configured = configured_servers(config);
        (configured == want)
            .then_some(())
            .ok_or(format!("configured: {configured:?}"))
    });
    let window = 4 * want.len() + 4;
    let start = client.requests();
    wait_for(CONVERGE, &format!("answers from exactly {want:?}"), || {
        let served = client.served_lately(window);
        (client.requests() >= start + window && served == want)
            .then_some(())
            .ok_or(format!("served lately: {served:?}"))
    });
}

fn template_status(agent: &Agent) -> Value {
    let info = agent.info().unwrap_or_else(|e| panic!("{e}"));
    info["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "haproxy/config")
        .unwrap_or_else(|| panic!("no haproxy/config handler: {info}"))["runtime"]
        .clone()
}

#[test]
fn haproxy_follows_the_web_members_without_dropping_a_request() {
    if !haproxy_here() {
        return;
    }
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let haproxy = Haproxy::start(dir.path());
    let (config, frontend) = (&haproxy.config, haproxy.frontend);

    let lb = Agent::start("lb", &["--tag", "role=lb"]);
    // A quiet time longer than the default 100 ms: a loaded machine must not split the
    // burst below into two renders.
    haproxy.install_plugin(&lb, &["backend_tag=role=web", "wait=1s", "wait_max=3s"]);
    wait_for(CONVERGE, "the plugin's first reload", || {
        let (reloads, failed) = haproxy.reloads()?;
        (reloads >= 1 && failed == 0)
            .then_some(())
            .ok_or(format!("reloads {reloads}, failed {failed}"))
    });

    // The client starts once there is a backend: before, haproxy rightly answers 503.
    let mut webs = vec![web("web-1", &lb)];
    wait_for(CONVERGE, "haproxy to serve web-1", || {
        let body = http_get(frontend)?;
        (body == "web-1").then_some(()).ok_or(body)
    });
    let client = Client::start(frontend);
    webs.push(web("web-2", &lb));
    webs.push(web("web-3", &lb));
    wait_serving(config, &client, &["web-1", "web-2", "web-3"]);

    // web-3 leaves gracefully; its web server stops once haproxy no longer sends it anything.
    let mut web3 = webs.pop().unwrap();
    web3.agent.cli_ok(&["leave"]);
    web3.agent.wait_exit(CONVERGE);
    wait_serving(config, &client, &["web-1", "web-2"]);
    web3.backend.kill9();

    // web-2 fails: its web server and its agent are killed at once.
    let killed_at = Instant::now();
    webs[1].backend.kill9();
    webs[1].agent.kill9();
    wait_serving(config, &client, &["web-1"]);

    // web-2 comes back.
    webs[1].restart_backend(Path::new(WEB_BACKEND));
    webs[1].agent.restart();
    wait_serving(config, &client, &["web-1", "web-2"]);

    // A burst: three web members that already know each other join in one exchange. First,
    // every reload so far is done (haproxy counted as many as the plugin).
    let before = wait_for(CONVERGE, "the reloads so far to be done", || {
        let status = template_status(&lb);
        let (reloads, _) = haproxy.reloads()?;
        (status["reloads"].as_u64() == Some(reloads))
            .then_some(status.clone())
            .ok_or(format!("haproxy {reloads}, plugin {status}"))
    });
    let (reloads_before, _) = haproxy.reloads().unwrap();
    let seed = Agent::start("lb-side", &[]);
    let mut burst = vec![
        web("web-4", &seed),
        web("web-5", &seed),
        web("web-6", &seed),
    ];
    wait_for(CONVERGE, "the burst's members to know each other", || {
        let alive = burst[0]
            .agent
            .members()?
            .iter()
            .filter(|m| m.status == "alive")
            .count();
        (alive == 4).then_some(()).ok_or(format!("{alive} alive"))
    });
    lb.cli_ok(&["join", &burst[0].agent.addr().to_string()]);
    wait_serving(
        config,
        &client,
        &["web-1", "web-2", "web-4", "web-5", "web-6"],
    );
    let after = wait_for(CONVERGE, "the burst's reload to be done", || {
        let status = template_status(&lb);
        let (reloads, _) = haproxy.reloads()?;
        (status["reloads"].as_u64() == Some(reloads) && reloads > reloads_before)
            .then_some(status.clone())
            .ok_or(format!("haproxy {reloads}, plugin {status}"))
    });
    let written = after["written"].as_u64().unwrap() - before["written"].as_u64().unwrap();
    let reloads = after["reloads"].as_u64().unwrap() - before["reloads"].as_u64().unwrap();
    let (reloads_after, failed) = haproxy.reloads().unwrap();
    assert_eq!(written, 1, "a burst of three joins is one render: {after}");
    assert_eq!(reloads, 1, "and one reload: {after}");
    assert_eq!(reloads_after - reloads_before, 1, "haproxy reloaded once");
    assert_eq!(failed, 0, "haproxy refused none of the configs");

    let results = client.finish();
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    let at_kill: Vec<_> = failures
        .iter()
        .filter(|(at, _)| at.duration_since(killed_at) < Duration::from_secs(1))
        .filter(|(at, _)| *at >= killed_at)
        .collect();
    eprintln!(
        "{} requests, {} failed ({} within a second of the kill -9)",
        results.len(),
        failures.len(),
        at_kill.len()
    );
    assert_eq!(
        failures.len(),
        at_kill.len(),
        "requests failed away from the kill -9: {failures:?}"
    );
    assert!(
        at_kill.len() <= 1,
        "more than the request in flight failed: {at_kill:?}"
    );
    drop(burst.drain(..));
    drop(haproxy);
}

#[test]
fn a_failing_health_check_takes_its_backend_out_without_a_failed_request() {
    if !haproxy_here() {
        return;
    }
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let haproxy = Haproxy::start(dir.path());
    let (config, frontend) = (&haproxy.config, haproxy.frontend);
    let lb = Agent::start("lb-health", &["--tag", "role=lb"]);
    haproxy.install_plugin(&lb, &[]);
    // Each web node checks a file of its own: there, its service is "down" (its web server
    // keeps answering, so only the check can take it out).
    let check_files = |name: &str| {
        let flag = dir.path().join(format!("{name}.down"));
        let checks = dir.path().join(format!("{name}.toml"));
        write_file(
            &checks,
            &format!(
                "[[check]]\nname = \"app\"\ncommand = \"test ! -e '{}'\"\n\
                 interval = \"200ms\"\nrise = 1\nfall = 1\n",
                flag.display()
            ),
        );
        (flag, checks)
    };
    let (flag1, checks1) = check_files("hweb-1");
    let (flag2, checks2) = check_files("hweb-2");
    let _webs = [
        WebNode::start(
            Path::new(WEB_BACKEND),
            "hweb-1",
            &lb,
            &["--config", &checks1.to_string_lossy()],
        ),
        WebNode::start(
            Path::new(WEB_BACKEND),
            "hweb-2",
            &lb,
            &["--config", &checks2.to_string_lossy()],
        ),
    ];
    wait_for(CONVERGE, "haproxy to serve hweb-1", || {
        let body = http_get(frontend)?;
        (body.starts_with("hweb-")).then_some(()).ok_or(body)
    });
    let client = Client::start(frontend);
    wait_serving(config, &client, &["hweb-1", "hweb-2"]);

    // hweb-2's check fails (exit 1: a warning, which is not passing): out of the backend.
    write_file(&flag2, "");
    wait_serving(config, &client, &["hweb-1"]);
    let me = lb.members_named("hweb-2").unwrap().remove(0);
    assert_eq!(
        (me.status.as_str(), me.tags["health_app"].as_str()),
        ("alive", "warning"),
        "alive, but not passing"
    );
    // And the other way round.
    std::fs::remove_file(&flag2).unwrap();
    wait_serving(config, &client, &["hweb-1", "hweb-2"]);
    write_file(&flag1, "");
    wait_serving(config, &client, &["hweb-2"]);
    std::fs::remove_file(&flag1).unwrap();
    wait_serving(config, &client, &["hweb-1", "hweb-2"]);

    let results = client.finish();
    let failures: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        results.len()
    );
    let (_, failed) = haproxy.reloads().unwrap();
    assert_eq!(failed, 0, "haproxy refused none of the configs");
}

#[test]
fn a_config_haproxy_refuses_keeps_the_running_one() {
    if !haproxy_here() {
        return;
    }
    let dir = test_tempdir();
    let haproxy = Haproxy::start(dir.path());
    let config = &haproxy.config;
    let lb = Agent::start("lb-bad", &[]);
    haproxy.install_plugin(&lb, &[]);
    wait_for(CONVERGE, "the first reload", || {
        let (reloads, _) = haproxy.reloads()?;
        (reloads >= 1).then_some(()).ok_or("none yet".into())
    });
    let good = std::fs::read_to_string(config).unwrap();
    // A balance algorithm haproxy -c refuses: the check keeps the running config.
    lb.cli_ok(&["plugin", "set", "haproxy", "balance=no-such-algorithm"]);
    wait_for(CONVERGE, "the refused check", || {
        let status = template_status(&lb);
        (status["check_failures"].as_u64() == Some(1))
            .then_some(())
            .ok_or(status.to_string())
    });
    assert_eq!(std::fs::read_to_string(config).unwrap(), good);
    let info = lb.cli_ok(&["plugin", "info", "haproxy"]);
    assert!(
        info.contains("1 check failures") && info.contains("refused"),
        "{info}"
    );
}
