//! The built-in memcached plugin against real memcached 1.6 servers on 127.0.0.1: after each
//! membership or health change the four lists hold exactly the passing memcached members, in
//! every format, sorted; a client built from a list can set and get on each server; and the
//! optional reload runs once per change for the four files together.

use std::path::Path;
use std::time::Duration;

use rumor_tests::services::{ChildProcess, memcached, memcached_command, program_available};
use rumor_tests::{Agent, cluster_slot, free_port, skip_or_fail, test_tempdir, wait_for};

const CONVERGE: Duration = Duration::from_secs(20);

struct Cache {
    port: u16,
    server: ChildProcess,
    agent: Agent,
}

fn cache(name: &str, join: &Agent, weight: Option<&str>) -> Cache {
    cache_at(name, free_port(), join, weight, None)
}

/// A memcached server on `port` and its agent; with `config` (a file with a `[[check]]`).
fn cache_at(
    name: &str,
    port: u16,
    join: &Agent,
    weight: Option<&str>,
    config: Option<&Path>,
) -> Cache {
    let server = memcached(port);
    let port_tag = format!("port={port}");
    let mut args = vec!["--tag", "role=memcached", "--tag", &port_tag];
    let config = config.map(|c| c.to_string_lossy().to_string());
    if let Some(config) = &config {
        args.extend(["--config", config]);
    }
    let weight_tag;
    if let Some(w) = weight {
        weight_tag = format!("weight={w}");
        args.extend(["--tag", &weight_tag]);
    }
    let join = join.addr().to_string();
    args.extend(["--join", &join]);
    Cache {
        port,
        server,
        agent: Agent::start(name, &args),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the four lists name exactly `ports` (in this order: by member name), with the
/// weights `weights`.
fn wait_lists(dir: &Path, ports: &[u16], weights: &[u32]) {
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let want = [
        (
            "servers",
            servers.iter().map(|s| format!("{s}\n")).collect::<String>(),
        ),
        (
            "ketama",
            servers
                .iter()
                .zip(weights)
                .map(|(s, w)| format!("{s}\t{w}\n"))
                .collect(),
        ),
        (
            "libmemcached.conf",
            servers.iter().map(|s| format!("--SERVER={s}\n")).collect(),
        ),
        (
            "memcache.env",
            format!("MEMCACHE_SERVERS={}\n", servers.join(",")),
        ),
    ];
    for (file, text) in want {
        wait_for(CONVERGE, &format!("{file} to list {servers:?}"), || {
            let got = read(&dir.join(file));
            (got == text).then_some(()).ok_or(format!("{got:?}"))
        });
    }
}

/// A client that reads `servers` and sets then gets a key on every server in it.
fn use_every_server(dir: &Path) {
    let list = read(&dir.join("servers"));
    assert!(!list.is_empty());
    for (i, server) in list.lines().enumerate() {
        let value = format!("v{i}");
        let set = memcached_command(
            server,
            &format!("set k{i} 0 0 {}\r\n{value}\r\n", value.len()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set, "STORED\r\n", "{server}");
        let got = memcached_command(server, &format!("get k{i}\r\n")).unwrap();
        assert_eq!(
            got,
            format!("VALUE k{i} 0 {}\r\n{value}\r\nEND\r\n", value.len())
        );
    }
}

#[test]
fn the_lists_hold_exactly_the_passing_memcached_members() {
    if !program_available("memcached") {
        skip_or_fail("memcached is not installed (apt-get install memcached)");
        return;
    }
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let out = dir.path().join("lists");
    let reloads = dir.path().join("reloads.log");
    let app = Agent::start("mc-app", &["--tag", "role=app"]);
    let said = app.cli_ok(&[
        "plugin",
        "install",
        "memcached",
        "--set",
        &format!("output_dir={}", out.display()),
        "--set",
        "port_tag=port",
        "--set",
        &format!("reload=echo reloaded >> {}", reloads.display()),
    ]);
    assert!(said.contains("memcached/servers"), "{said}");
    wait_lists(&out, &[], &[]);

    // mc-2's agent checks its memcached by TCP: when memcached dies, the host stays in the
    // cluster but leaves the lists.
    let checked = dir.path().join("checked.toml");
    let mut caches = vec![cache("mc-1", &app, Some("3"))];
    let mc2_port = free_port();
    std::fs::write(
        &checked,
        format!(
            "[[check]]\nname = \"memcached\"\ntcp = \"127.0.0.1:{mc2_port}\"\n\
             interval = \"1s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1\n"
        ),
    )
    .unwrap();
    caches.push(cache_at("mc-2", mc2_port, &app, None, Some(&checked)));
    caches.push(cache("mc-3", &app, None));
    let ports: Vec<u16> = caches.iter().map(|c| c.port).collect();
    wait_lists(&out, &ports, &[3, 1, 1]);
    use_every_server(&out);

    // mc-2's memcached dies, its agent lives: its check goes critical and it leaves the
    // lists; memcached back on its port, the check passes and it is listed again.
    caches[1].server.kill9();
    wait_lists(&out, &[ports[0], ports[2]], &[3, 1]);
    assert_eq!(
        app.members()
            .unwrap_or_default()
            .iter()
            .find(|m| m.name == "mc-2")
            .map(|m| m.status.clone()),
        Some("alive".to_string()),
        "a failing check does not take the host out of the cluster"
    );
    caches[1].server = memcached(ports[1]);
    wait_lists(&out, &ports, &[3, 1, 1]);
    use_every_server(&out);

    // mc-3 leaves gracefully: one change, one reload for the four files.
    let lines = |p: &Path| read(p).lines().count();
    wait_for(CONVERGE, "the reloads to settle", || {
        let before = lines(&reloads);
        std::thread::sleep(Duration::from_millis(1200));
        (lines(&reloads) == before)
            .then_some(())
            .ok_or("still reloading".into())
    });
    let before = lines(&reloads);
    let mut gone = caches.pop().unwrap();
    gone.agent.cli_ok(&["leave"]);
    gone.agent.wait_exit(CONVERGE);
    wait_lists(&out, &ports[..2], &[3, 1]);
    wait_for(CONVERGE, "one reload", || {
        (lines(&reloads) == before + 1)
            .then_some(())
            .ok_or(read(&reloads))
    });
    drop(gone);

    // mc-2 fails: memcached and its agent killed.
    caches[1].server.kill9();
    caches[1].agent.kill9();
    wait_lists(&out, &ports[..1], &[3]);
    use_every_server(&out);
    assert_eq!(lines(&reloads), before + 2, "one reload per change");
}
