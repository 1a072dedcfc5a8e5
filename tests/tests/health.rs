//! Health checks end to end: real agents running real check commands. A check flips only
//! after `rise`/`fall` results in a row (a flapping service does not flap the tag), every
//! member sees the state in the node's tags (and `rumor members --tag` filters on it), a
//! change fires the notify event to a handler on another node with the change as JSON, a check
//! that hangs or floods its output is bounded, reloads add and remove checks, and bad check
//! settings are refused with errors that say what is wrong. (The haproxy plugin dropping a
//! failing backend is in `haproxy.rs`.)

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumor_tests::services::unix_http_get;
use rumor_tests::{
    Agent, cluster_slot, free_port, live_monitors, member_event_names, rumor_command,
    run_with_timeout, start_cluster, test_tempdir, wait_for, write_file,
};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(20);

/// A check script driven by files: `down` there makes it fail (exit 2), `flap` there makes
/// every other run fail, otherwise it passes.
fn check_script(dir: &Path) -> String {
    let script = dir.join("check.sh");
    write_file(
        &script,
        &format!(
            "cd '{}'\n\
             if [ -e down ]; then echo 'down: the down file exists'; exit 2; fi\n\
             if [ -e flap ]; then\n  n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count\n  \
             if [ $((n % 2)) = 1 ]; then echo flapping; exit 2; fi\n\
             fi\n\
             echo up\n",
            dir.display()
        ),
    );
    format!("sh '{}'", script.display())
}

/// `rumor checks --format json` of `agent`: the check named `name`.
fn check(agent: &Agent, name: &str) -> Result<Value, String> {
    let out = agent.try_cli(&["checks", "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name).cloned())
        .ok_or(format!("no check {name}: {out}"))
}

/// The names `agent` lists with `rumor members --tag TAG`.
fn members_tagged(agent: &Agent, tag: &str) -> Result<Vec<String>, String> {
    let out = agent.try_cli(&["members", "--tag", tag, "--format", "json"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    Ok(v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect())
}

/// The notify events the handler appended to `file`, one JSON object a line.
fn notices(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[test]
fn a_check_flips_after_rise_and_fall_and_tells_another_node() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let command = check_script(dir.path());
    let config = dir.path().join("a.toml");
    write_file(
        &config,
        &format!(
            "[[check]]\nname = \"web\"\ncommand = {command:?}\ninterval = \"1s\"\n\
             timeout = \"1s\"\nrise = 2\nfall = 2\nnotify = \"health\"\n"
        ),
    );
    let out = dir.path().join("notices");
    let handler = format!("user:health=cat >> '{0}'; echo >> '{0}'", out.display());
    let agents = start_cluster(&["hc-a", "hc-b", "hc-c"], CONVERGE, |name| match name {
        "hc-a" => vec!["--config".into(), config.display().to_string()],
        "hc-b" => vec!["--event-handler".into(), handler.clone()],
        _ => vec![],
    });
    let (a, b, c) = (&agents[0], &agents[1], &agents[2]);

    // Every member sees it pass, through `rumor members --tag`.
    for agent in [a, b, c] {
        wait_for(CONVERGE, "hc-a's check to pass everywhere", || {
            let passing = members_tagged(agent, "health_web=passing")?;
            (passing == ["hc-a"])
                .then_some(())
                .ok_or(format!("{} lists {passing:?}", agent.name()))
        });
    }
    let started = check(a, "web").unwrap();
    assert_eq!(started["transitions"], 1, "the first result: {started}");
    assert_eq!(started["output"], "up");

    // A flapping service: every other run fails. With fall = 2 the state never moves.
    write_file(&dir.path().join("flap"), "");
    let runs = started["runs"].as_u64().unwrap();
    let flapped = wait_for(CONVERGE * 2, "eight flapping runs", || {
        let now = check(a, "web")?;
        (now["runs"].as_u64().unwrap() >= runs + 8)
            .then_some(now.clone())
            .ok_or(now.to_string())
    });
    assert_eq!(flapped["state"], "passing", "{flapped}");
    assert_eq!(flapped["transitions"], 1, "no flap: {flapped}");
    assert_eq!(members_tagged(b, "health_web=passing").unwrap(), ["hc-a"]);
    std::fs::remove_file(dir.path().join("flap")).unwrap();

    // Down for good: critical after two results, everywhere, and hc-b's handler is told.
    let monitors = live_monitors(&agents[1..], CONVERGE);
    write_file(&dir.path().join("down"), "");
    for agent in [a, b, c] {
        wait_for(CONVERGE, "hc-a critical everywhere", || {
            let critical = members_tagged(agent, "health_web=critical")?;
            (critical == ["hc-a"])
                .then_some(())
                .ok_or(format!("{} lists {critical:?}", agent.name()))
        });
    }
    let notice = wait_for(CONVERGE, "the notify event at hc-b", || {
        notices(&out)
            .into_iter()
            .find(|n| n["new"] == "critical")
            .ok_or(format!("{:?}", notices(&out)))
    });
    assert_eq!(
        notice,
        serde_json::json!({"node": "hc-a", "check": "web", "old": "passing",
                           "new": "critical", "output": "down: the down file exists"})
    );
    // How long the change took to reach each member's tags (their member-update events).
    let changed = check(a, "web").unwrap();
    let changed_ms = changed["since_unix_ms"].as_u64().unwrap();
    let (wall, instant) = (SystemTime::now(), Instant::now());
    for monitor in &monitors {
        let (arrived, _) = wait_for(CONVERGE, "the member-update", || {
            monitor
                .first(|l| {
                    member_event_names(l, "update").contains(&"hc-a".to_string())
                        && l["event"]["members"][0]["tags"]["health_web"] == "critical"
                })
                .ok_or("not yet".to_string())
        });
        let arrived_ms = unix_ms(wall - instant.duration_since(arrived));
        eprintln!(
            "FIGURE health change to {}'s tags: {} ms",
            monitor.agent(),
            arrived_ms.saturating_sub(changed_ms)
        );
    }

    // Back up: passing after rise = 2 results, and told again.
    std::fs::remove_file(dir.path().join("down")).unwrap();
    wait_for(CONVERGE, "hc-a passing again at hc-c", || {
        let passing = members_tagged(c, "health_web=passing")?;
        (passing == ["hc-a"])
            .then_some(())
            .ok_or(format!("{passing:?}"))
    });
    wait_for(CONVERGE, "the recovery notice", || {
        let all = notices(&out);
        (all.len() == 2 && all[1]["old"] == "critical" && all[1]["new"] == "passing")
            .then_some(())
            .ok_or(format!("{all:?}"))
    });
    let metrics = unix_http_get(&a.control_path(), "/metrics").unwrap();
    assert!(
        metrics.contains("rumor_check_transitions_total{check=\"web\"} 3\n")
            && metrics.contains("rumor_check_state{check=\"web\",state=\"passing\"} 1\n"),
        "{metrics}"
    );
    let table = a.cli_ok(&["checks"]);
    assert!(
        table.starts_with("NAME") && table.contains("web") && table.contains("passing"),
        "{table}"
    );
}

/// The processes whose command line is `sleep SECONDS`.
fn sleeps(seconds: &str) -> usize {
    let want = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| cmdline == want.as_bytes())
        .count()
}

#[test]
fn a_check_that_hangs_or_floods_is_bounded_and_reloads_change_the_checks() {
    let dir = test_tempdir();
    let config = dir.path().join("rumor.toml");
    // Sleeps this test alone runs (a killed agent's last run may outlive it).
    let (background, foreground) = (
        format!("987.{}", std::process::id()),
        format!("986.{}", std::process::id()),
    );
    let checks = format!(
        "[[check]]\nname = \"hang\"\ncommand = \"sleep {background} & sleep {foreground}\"\n\
         interval = \"300ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\n\
         [[check]]\nname = \"flood\"\ncommand = \"yes flood | head -n 200000; exit 1\"\n\
         interval = \"5s\"\ntimeout = \"5s\"\n"
    );
    write_file(&config, &checks);
    let agent = Agent::start("hc-bounded", &["--config", &config.to_string_lossy()]);

    let hang = wait_for(CONVERGE, "five runs of the hanging check", || {
        let hang = check(&agent, "hang")?;
        (hang["runs"].as_u64().unwrap() >= 5)
            .then_some(hang.clone())
            .ok_or(hang.to_string())
    });
    assert_eq!(hang["state"], "critical", "{hang}");
    assert!(
        hang["output"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 200ms"),
        "{hang}"
    );
    // Each timeout killed the run's whole process group, the background sleep included.
    let (left_background, left_foreground) = (sleeps(&background), sleeps(&foreground));
    assert!(
        left_background <= 1 && left_foreground <= 1,
        "runs were left behind: {left_background} and {left_foreground}"
    );
    // 1.2 MB of output, far over the 4 KiB kept; its timeout generous, so a loaded machine
    // cannot turn its exit 1 (a warning) into a timeout (critical).
    let flood = wait_for(CONVERGE, "two runs of the flooding check", || {
        let flood = check(&agent, "flood")?;
        (flood["runs"].as_u64().unwrap() >= 2)
            .then_some(flood.clone())
            .ok_or(flood.to_string())
    });
    assert_eq!(flood["state"], "warning", "exit 1 is a warning: {flood}");
    let output = flood["output"].as_str().unwrap();
    assert!(
        output.len() <= 4096 && output.lines().all(|l| l == "flood"),
        "{} bytes kept",
        output.len()
    );
    let me = agent.members_named("hc-bounded").unwrap().remove(0);
    assert_eq!(me.tags["health_hang"], "critical");
    assert_eq!(me.tags["health_flood"], "warning");

    // A bad check in the file: the reload says what is wrong and the running checks stay.
    write_file(
        &config,
        &format!("{checks}\n[[check]]\nname = \"web\"\ntcp = \"no-port\"\n"),
    );
    let err = agent.try_cli(&["reload"]).unwrap_err();
    assert!(
        err.contains("check \"web\"") && err.contains("is not HOST:PORT"),
        "{err}"
    );
    assert!(check(&agent, "hang").is_ok());

    // Removing a check stops it and deletes its tag; a new one starts critical and runs.
    let port = free_port();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    write_file(
        &config,
        &format!(
            "[[check]]\nname = \"flood\"\ncommand = \"yes flood | head -n 200000; exit 1\"\n\
             interval = \"5s\"\ntimeout = \"5s\"\n\n[[check]]\nname = \"port\"\n\
             tcp = \"127.0.0.1:{port}\"\ninterval = \"200ms\"\n"
        ),
    );
    agent.cli_ok(&["reload"]);
    wait_for(CONVERGE, "the tags to follow the reload", || {
        let me = agent.members_named("hc-bounded")?.remove(0);
        (!me.tags.contains_key("health_hang")
            && me.tags.get("health_port").map(String::as_str) == Some("passing"))
        .then_some(())
        .ok_or(format!("{:?}", me.tags))
    });
    assert!(check(&agent, "hang").is_err());
    wait_for(
        CONVERGE,
        "the removed check's last run to be killed",
        || {
            let left = sleeps(&background) + sleeps(&foreground);
            (left == 0).then_some(()).ok_or(format!("{left} left"))
        },
    );
    drop(listener);
    wait_for(CONVERGE, "the port check to fail", || {
        let port = check(&agent, "port")?;
        (port["state"] == "critical")
            .then_some(())
            .ok_or(port.to_string())
    });
}

/// `rumor agent ARGS` must refuse to start, without a panic; its stderr.
fn refused_start(dir: &Path, args: &[&str]) -> String {
    let data = dir.join("data");
    let bind = format!("127.0.0.1:{}", free_port());
    let mut cmd = rumor_command();
    cmd.args([
        "agent",
        "--data-dir",
        &data.to_string_lossy(),
        "--bind",
        &bind,
    ])
    .args(args);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("rumor agent {args:?} should have refused to start: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "started with {args:?}: {err}");
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    err
}

#[test]
fn bad_check_settings_are_refused_with_what_is_wrong() {
    let dir = test_tempdir();
    let config = dir.path().join("rumor.toml");
    for (text, says) in [
        ("[[check]]\ncommand = \"true\"\n", "needs a `name`"),
        (
            "[[check]]\nname = \"web\"\ncommand = \"true\"\nhttp = \"http://127.0.0.1/\"\n",
            "set exactly one of `command`",
        ),
        (
            "[[check]]\nname = \"web\"\nhttp = \"https://example.org/\"\n",
            "https is not supported",
        ),
        (
            "[[check]]\nname = \"web\"\ncommand = \"true\"\ninterval = \"often\"\n",
            "invalid interval \"often\"",
        ),
        (
            "[[check]]\nname = \"web\"\ncommand = \"true\"\ninterval = \"1s\"\ntimeout = \"5s\"\n",
            "at most the interval",
        ),
        (
            "[[check]]\nname = \"web\"\ncommand = \"true\"\nfall = 0\n",
            "fall = 0",
        ),
        (
            "[[check]]\nname = \"web\"\ncommand = \"true\"\n\n[[check]]\nname = \"web\"\ntcp = \"a:1\"\n",
            "two checks are named \"web\"",
        ),
        (
            "[[check]]\nname = \"web\"\ncommand = \"true\"\nretries = 3\n",
            "unknown field `retries`",
        ),
    ] {
        write_file(&config, text);
        let err = refused_start(dir.path(), &["--config", &config.to_string_lossy()]);
        assert!(
            err.contains(says),
            "{text:?}: stderr does not say {says:?}:\n{err}"
        );
        assert!(
            err.contains(&*config.to_string_lossy()),
            "{text:?}: stderr does not name the file:\n{err}"
        );
    }
    let err = refused_start(dir.path(), &["--check", "no-command"]);
    assert!(err.contains("expected NAME=COMMAND"), "{err}");
    let err = refused_start(dir.path(), &["--check", "a b=true"]);
    assert!(err.contains("check name \"a b\""), "{err}");
}
