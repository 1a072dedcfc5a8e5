//! Coming from Serf, end to end: Serf-style handler scripts (the web load-balancer demo with a
//! real haproxy, the classic hosts-file script) run unchanged; the binary installed as `serf`
//! answers a script written for Serf's command line exactly as Debian's serf does; Serf's JSON
//! configuration imports into a rumor.toml that starts an agent behaving as configured; and
//! bad input (a Serf flag rumor cannot honour, a malformed config) gets a clear error.
//!
//! The scripts are written in Serf's style (no `#!` line, `SERF_*` variables, the tab-separated
//! member lines on stdin); only their paths and haproxy's reload command are the test's.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rumor::cluster::keyring::Key;
use rumor_tests::{
    Agent, cluster_slot, free_port, rumor_command, run_with_timeout, serf_symlink, skip_or_fail,
    start_cluster, test_tempdir, wait_for, write_file,
};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(15);
const RUN: Duration = Duration::from_secs(30);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Writes a handler script as Serf users do: executable, without a `#!` line.
fn script(path: &Path, text: &str) -> String {
    write_file(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Whether `program` can be run here (a Debian package the test needs).
fn installed(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A child process this test started (haproxy, Debian's serf), killed by its pid when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Daemon { child, log }
    }

    fn log(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers of proxy `proxy` as the running haproxy has them (its stats socket).
fn haproxy_servers(socket: &Path, proxy: &str) -> Result<BTreeSet<String>, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("stats socket: {e}"))?;
    stream
        .write_all(b"show stat\n")
        .map_err(|e| format!("stats socket: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("stats socket: {e}"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            (fields.next() == Some(proxy)).then(|| fields.next().unwrap_or_default().to_string())
        })
        .filter(|server| server != "FRONTEND" && server != "BACKEND")
        .collect())
}

/// The `server` lines of a haproxy config, by server name.
fn configured_servers(cfg: &Path) -> Vec<String> {
    read(cfg)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn serfs_web_load_balancer_demo_runs_unchanged_with_haproxy() {
    if !installed("haproxy", "-v") {
        return skip_or_fail("haproxy is not installed (apt-get install haproxy)");
    }
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path();
    let cfg = d.join("haproxy.cfg");
    let pidfile = d.join("haproxy.pid");
    let stats = d.join("haproxy.sock");
    let haproxy_log = d.join("haproxy.log");
    // The demo's load balancer: no backend servers yet. The member-join script appends
    // `server NAME ADDR check` lines without a port, which haproxy 2.6 accepts only with a
    // port to check; the test's web nodes serve nothing, so their checks simply fail.
    write_file(
        &cfg,
        &format!(
            "global\n    maxconn 256\n    stats socket {} mode 600 level admin\n\n\
             defaults\n    mode http\n    timeout connect 5000ms\n    timeout client 50000ms\n    \
             timeout server 50000ms\n    default-server port {}\n\n\
             listen http-in\n    bind 127.0.0.1:{}\n    balance roundrobin\n    option http-server-close\n",
            stats.display(),
            free_port(),
            free_port()
        ),
    );
    let haproxy = Daemon::spawn(
        Command::new("haproxy")
            .args(["-W", "-f"])
            .arg(&cfg)
            .arg("-p")
            .arg(&pidfile),
        haproxy_log.clone(),
    );
    wait_for(CONVERGE, "haproxy to serve its stats socket", || {
        haproxy_servers(&stats, "http-in").map_err(|e| format!("{e}; log: {}", haproxy.log()))
    });

    // The demo's scripts, in its style; only the paths and the reload command are the test's.
    // The reload waits until haproxy has loaded the file: haproxy 2.6 drops a SIGUSR2 that
    // arrives while it is still reloading, and every member event runs the script at once.
    let reload = format!(
        "loaded=`grep -c 'Loading success' {log}`\n\
         kill -USR2 `cat {pid}`\n\
         tries=0\n\
         while [ `grep -c 'Loading success' {log}` -le $loaded ] && [ $tries -lt 100 ]; do\n    \
             sleep 0.1; tries=$((tries + 1))\n\
         done",
        log = haproxy_log.display(),
        pid = pidfile.display()
    );
    let join = script(
        &d.join("member-join.sh"),
        &format!(
            r#"# Adds the web members that joined to this load balancer's haproxy.cfg.
if [ "x${{SERF_TAG_ROLE}}" != "xlb" ]; then
    echo "This node is not a load balancer; nothing to do."
    exit 0
fi

while read line; do
    role=`echo $line | awk '{{print $3}}'`
    if [ "x${{role}}" != "xweb" ]; then
        continue
    fi
    echo $line | awk '{{ printf "    server %s %s check\n", $1, $2 }}' >> {cfg}
done

{reload}
"#,
            cfg = cfg.display()
        ),
    );
    let leave = script(
        &d.join("member-leave.sh"),
        &format!(
            r#"# Removes the members that left or failed from this load balancer's haproxy.cfg.
if [ "x${{SERF_TAG_ROLE}}" != "xlb" ]; then
    echo "This node is not a load balancer; nothing to do."
    exit 0
fi

while read line; do
    name=`echo $line | awk '{{print $1}}'`
    sed -i'' "/ server ${{name}} /d" {cfg}
done

{reload}
"#,
            cfg = cfg.display()
        ),
    );
    let handlers = |role: &str| {
        vec![
            "--tag".to_string(),
            format!("role={role}"),
            "--event-handler".into(),
            format!("member-join={join}"),
            "--event-handler".into(),
            format!("member-leave,member-failed={leave}"),
            "--event-handler".into(),
            "query:load=uptime".into(),
        ]
    };
    let mut agents = start_cluster(&["lb-1", "web-1", "web-2"], CONVERGE, |name| {
        handlers(if name.starts_with("lb") { "lb" } else { "web" })
    });

    let both = BTreeSet::from(["web-1".to_string(), "web-2".to_string()]);
    wait_for(CONVERGE, "haproxy to balance over both web nodes", || {
        let running = haproxy_servers(&stats, "http-in")?;
        let lines = configured_servers(&cfg);
        if running == both && lines.len() == 2 {
            Ok(())
        } else {
            Err(format!(
                "haproxy runs {running:?}, haproxy.cfg lists {lines:?}; log: {}",
                haproxy.log()
            ))
        }
    });
    let checked = run_with_timeout(Command::new("haproxy").args(["-c", "-f"]).arg(&cfg), RUN);
    assert!(
        checked.as_ref().is_ok_and(|o| o.status.success()),
        "{checked:?}"
    );

    // The demo's load query, the way its status page asks it: `serf query -no-ack load`.
    let bin = test_tempdir();
    serf_symlink(bin.path());
    let mut asked = Command::new(bin.path().join("serf"));
    asked
        .args(["query", "-no-ack", "-timeout=10s", "load"])
        .env("SERF_RPC_ADDR", agents[0].control_path());
    let asked = run_with_timeout(&mut asked, RUN).unwrap();
    let text = String::from_utf8_lossy(&asked.stdout);
    assert!(asked.status.success(), "{text} {:?}", asked.stderr);
    for a in &agents {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("Response from '{}': ", a.name())))
            .unwrap_or_else(|| panic!("no answer from {}:\n{text}", a.name()));
        assert!(line.contains("load average"), "{line}");
    }
    assert!(text.ends_with("Total Responses: 3\n"), "{text}");
    let json: Value = serde_json::from_str(&agents[0].cli_ok(&[
        "query",
        "load",
        "--format",
        "json",
        "--timeout",
        "10s",
    ]))
    .unwrap();
    assert_eq!(
        json["responses"].as_object().map(|r| r.len()),
        Some(3),
        "{json}"
    );

    // A web node dies: the member-failed run takes it out, haproxy reloads without it.
    agents[2].kill9();
    let one = BTreeSet::from(["web-1".to_string()]);
    wait_for(CONVERGE, "haproxy to drop the failed web node", || {
        let running = haproxy_servers(&stats, "http-in")?;
        let lines = configured_servers(&cfg);
        if running == one && lines == ["web-1"] {
            Ok(())
        } else {
            Err(format!(
                "haproxy runs {running:?}, haproxy.cfg lists {lines:?}"
            ))
        }
    });
}

#[test]
fn the_classic_hosts_file_script_lists_every_node_itself_included() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path();
    // The classic Serf handler: one line per member, "ADDRESS NAME", from member events.
    let hosts = script(
        &d.join("hosts.sh"),
        &format!(
            r#"# Keeps a hosts file of the cluster's members.
HOSTS={dir}/hosts-$SERF_SELF_NAME
touch $HOSTS
while read name addr role tags; do
    grep -v " $name\$" $HOSTS > $HOSTS.new
    case $SERF_EVENT in
        member-join) echo "$addr $name" >> $HOSTS.new ;;
    esac
    mv $HOSTS.new $HOSTS
done
"#,
            dir = d.display()
        ),
    );
    let handler = format!("member-join,member-leave,member-failed={hosts}");
    let mut agents = start_cluster(&["hosts-1", "hosts-2", "hosts-3"], CONVERGE, |_| {
        vec!["--event-handler".to_string(), handler.clone()]
    });
    let listed = |name: &str| {
        let mut lines: Vec<String> = read(&d.join(format!("hosts-{name}")))
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        lines
    };
    let want = |names: &[&str]| -> Vec<String> {
        names.iter().map(|n| format!("127.0.0.1 {n}")).collect()
    };
    for a in &agents {
        wait_for(CONVERGE, "every hosts file to list all three nodes", || {
            let got = listed(a.name());
            if got == want(&["hosts-1", "hosts-2", "hosts-3"]) {
                Ok(())
            } else {
                Err(format!("{}: {got:?}", a.name()))
            }
        });
    }

    // A graceful leave: the others drop the node, and the node's own member-leave ran too
    // before its agent exited, as under Serf.
    agents[2].cli_ok(&["leave"]);
    assert!(
        agents[2].wait_exit(CONVERGE).is_some(),
        "hosts-3 did not exit"
    );
    assert_eq!(listed("hosts-3"), want(&["hosts-1", "hosts-2"]));
    // A failure: the survivor drops the failed node.
    agents[1].kill9();
    for (name, left) in [
        ("hosts-1", &["hosts-1"][..]),
        ("hosts-2", &["hosts-1", "hosts-2"][..]),
    ] {
        wait_for(CONVERGE, "the hosts files to drop the nodes gone", || {
            let got = listed(name);
            if got == want(left) {
                Ok(())
            } else {
                Err(format!("{name}: {got:?}"))
            }
        });
    }
}

/// The structure of a JSON value: objects by key (the keys of a map keyed by node name, all
/// holding a `-`, as `*`), arrays by their first element, values by their type.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let node_keyed = map.keys().any(|k| k.contains('-'));
            Value::Object(
                map.iter()
                    .map(|(k, v)| (if node_keyed { "*".into() } else { k.clone() }, shape(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => Value::Null,
    }
}

/// A script written for Serf's command line, run against an agent (`SERF_RPC_ADDR`) with the
/// `serf` found in `path`, its outputs left in `out`.
fn serf_script(path: &Path, rpc: &str, out: &Path) -> Output {
    std::fs::create_dir_all(out).unwrap();
    let script = "set -e\n\
        serf members -format=json -tag role=web > members.json\n\
        serf event -coalesce=false deploy v2 > event.txt\n\
        serf query -format=json -timeout=3s load > query.json\n";
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script])
        .current_dir(out)
        .env(
            "PATH",
            format!(
                "{}:{}",
                path.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("SERF_RPC_ADDR", rpc);
    run_with_timeout(&mut cmd, RUN).unwrap()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", path.display(), read(path)))
}

#[test]
fn a_script_for_the_serf_command_gets_what_serf_gives_it() {
    if !installed("/usr/bin/serf", "version") {
        return skip_or_fail("Debian's serf is not installed (apt-get install serf)");
    }
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path();
    let handlers = |name: &str| {
        vec![
            "--tag".to_string(),
            format!("role={}", if name.ends_with('1') { "lb" } else { "web" }),
            "--event-handler".into(),
            "query:load=echo load on $SERF_SELF_NAME".into(),
            "--event-handler".into(),
            format!(
                "user:deploy=echo \"$SERF_USER_EVENT $(cat)\" >> {}/deploy-$SERF_SELF_NAME",
                d.display()
            ),
        ]
    };
    let agents = start_cluster(&["cmd-1", "cmd-2", "cmd-3"], CONVERGE, handlers);

    // The same script against Debian's serf: one agent, a web node, with the same handlers.
    let rpc = format!("127.0.0.1:{}", free_port());
    let serf_dir = d.join("serf");
    std::fs::create_dir_all(&serf_dir).unwrap();
    let real = Daemon::spawn(
        Command::new("/usr/bin/serf").args([
            "agent",
            "-node=serf-2",
            &format!("-bind=127.0.0.1:{}", free_port()),
            &format!("-rpc-addr={rpc}"),
            "-tag",
            "role=web",
            "-event-handler",
            "query:load=echo load on $SERF_SELF_NAME",
        ]),
        d.join("serf.log"),
    );
    wait_for(CONVERGE, "Debian's serf agent to answer", || {
        let mut members = Command::new("/usr/bin/serf");
        members.args(["members", &format!("-rpc-addr={rpc}")]);
        match run_with_timeout(&mut members, RUN) {
            Ok(o) if o.status.success() => Ok(()),
            other => Err(format!("{other:?}; log: {}", real.log())),
        }
    });
    let theirs = serf_script(Path::new("/usr/bin"), &rpc, &d.join("from-serf"));
    assert!(theirs.status.success(), "{theirs:?}");

    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    serf_symlink(&bin);
    let socket = agents[0].control_path();
    let ours = serf_script(&bin, &socket.to_string_lossy(), &d.join("from-rumor"));
    assert!(ours.status.success(), "{ours:?}");

    // The same shapes, field for field.
    for file in ["members.json", "query.json"] {
        let (a, b) = (
            json_file(&d.join("from-serf").join(file)),
            json_file(&d.join("from-rumor").join(file)),
        );
        assert_eq!(shape(&b), shape(&a), "{file}: serf printed {a}, rumor {b}");
    }
    assert_eq!(
        read(&d.join("from-rumor/event.txt")),
        read(&d.join("from-serf/event.txt"))
    );
    assert_eq!(
        read(&d.join("from-rumor/event.txt")),
        "Event 'deploy' dispatched! Coalescing enabled: false\n"
    );

    // And rumor's values: the web members, addresses as IP:PORT, every node's answer.
    let members = json_file(&d.join("from-rumor/members.json"));
    let names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cmd-2", "cmd-3"]);
    for (m, agent) in members["members"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&agents[1..])
    {
        assert_eq!(m["addr"], agent.addr().to_string());
        assert_eq!(m["port"], agent.port());
        assert_eq!(m["status"], "alive");
    }
    let query = json_file(&d.join("from-rumor/query.json"));
    for a in &agents {
        assert_eq!(
            query["Responses"][a.name()],
            format!("load on {}\n", a.name()),
            "{query}"
        );
    }
    assert_eq!(query["Acks"].as_array().map(Vec::len), Some(3), "{query}");
    for a in &agents {
        let file = d.join(format!("deploy-{}", a.name()));
        wait_for(CONVERGE, "the deploy event on every node", || {
            let got = read(&file);
            if got == "deploy v2\n" {
                Ok(())
            } else {
                Err(got)
            }
        });
    }
}

#[test]
fn serfs_config_imports_into_a_rumor_toml_that_starts_an_agent_as_configured() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path();
    // An encrypted Serf cluster: its keyring file, primary first.
    let primary = Key::generate().to_base64();
    let keyring = d.join("keyring");
    write_file(
        &keyring,
        &serde_json::to_string(&[&primary, &Key::generate().to_base64()]).unwrap(),
    );
    std::fs::set_permissions(&keyring, std::fs::Permissions::from_mode(0o600)).unwrap();
    let record = d.join("joins");
    let recorder = script(
        &d.join("record.sh"),
        &format!(
            "echo \"$SERF_EVENT $SERF_TAG_ROLE\" >> {0}; cat >> {0}\n",
            record.display()
        ),
    );
    // A config dir with two files, merged in name order, and keys rumor does without.
    let conf = d.join("serf.d");
    std::fs::create_dir_all(&conf).unwrap();
    write_file(
        &conf.join("10-site.json"),
        r#"{"log_level": "DEBUG", "enable_syslog": true, "statsd_addr": "127.0.0.1:8125",
            "tags": {"dc": "east"}}"#,
    );
    write_file(
        &conf.join("00-base.json"),
        &serde_json::json!({
            "node_name": "imp-1",
            "role": "web",
            "tags": {"dc": "west"},
            "keyring_file": keyring,
            "event_handlers": [format!("member-join={recorder}")],
            "rejoin_after_leave": true
        })
        .to_string(),
    );
    let imported = rumor_command()
        .args(["config", "import-serf"])
        .arg(&conf)
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&imported.stdout).into_owned();
    assert!(imported.status.success(), "{imported:?}");
    for unsupported in [
        "# enable_syslog = true",
        "# statsd_addr = \"127.0.0.1:8125\"",
    ] {
        let at = toml
            .find(unsupported)
            .unwrap_or_else(|| panic!("{unsupported} is not listed:\n{toml}"));
        assert!(
            toml[at..]
                .lines()
                .nth(1)
                .unwrap_or_default()
                .contains("not imported: "),
            "{toml}"
        );
    }
    let config = d.join("rumor.toml");
    write_file(&config, &toml);

    let seed = Agent::start("imp-1", &["--config", &config.to_string_lossy()]);
    let info = seed.info().unwrap();
    assert_eq!(info["agent"]["encrypted"], true, "{info}");
    let me = seed.members_named("imp-1").unwrap();
    assert_eq!(me[0].tags["role"], "web", "Serf's role");
    assert_eq!(me[0].tags["dc"], "east", "the later file wins");
    assert_eq!(info["handlers"][0]["command"], recorder.as_str(), "{info}");

    // A node with the cluster's primary key joins; Serf's coalescing reports it.
    let other = Agent::start(
        "imp-2",
        &[
            "--encrypt",
            &primary,
            "--tag",
            "role=db",
            "--join",
            &seed.addr().to_string(),
        ],
    );
    wait_for(
        CONVERGE,
        "the joiner in the imported handler's record",
        || {
            let got = read(&record);
            if got.contains("imp-2\t127.0.0.1\tdb\trole=db\n") {
                Ok(got)
            } else {
                Err(got)
            }
        },
    );
    let got = read(&record);
    assert!(
        got.starts_with("member-join web\nimp-1\t127.0.0.1\tweb\tdc=east,role=web\n"),
        "its own join first: {got}"
    );
    assert_eq!(other.members().unwrap().len(), 2);

    // The keyring is Serf's file, used in place: a key rumor installs lands in it.
    let new = Key::generate().to_base64();
    seed.cli_ok(&["keys", "--install", &new]);
    let ring: Vec<String> = serde_json::from_str(&read(&keyring)).unwrap();
    assert!(ring.contains(&new) && ring[0] == primary, "{ring:?}");
}

#[test]
fn tags_set_at_runtime_survive_a_restart_in_serfs_tags_file() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let tags = dir.path().join("tags.json");
    write_file(&tags, r#"{"role": "web"}"#);
    let mut agent = Agent::start("tagged-1", &["--tags-file", &tags.to_string_lossy()]);
    assert_eq!(agent.members().unwrap()[0].tags["role"], "web");
    let bin = test_tempdir();
    serf_symlink(bin.path());
    let mut set = Command::new(bin.path().join("serf"));
    set.args(["tags", "-set", "version=42", "-delete", "role"])
        .env("SERF_RPC_ADDR", agent.control_path());
    let out = run_with_timeout(&mut set, RUN).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Successfully updated agent tags\n"
    );
    wait_for(CONVERGE, "the tags file to follow the change", || {
        let text = read(&tags);
        let file: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if file == serde_json::json!({"version": "42"}) {
            Ok(())
        } else {
            Err(text)
        }
    });
    agent.kill9();
    agent.restart();
    let me = agent.members_named("tagged-1").unwrap();
    assert_eq!(
        me[0].tags,
        [("version".to_string(), "42".to_string())].into()
    );
}

#[test]
fn serf_flags_rumor_cannot_honour_and_malformed_configs_are_refused_clearly() {
    let dir = test_tempdir();
    let d = dir.path();
    let serf = serf_symlink(d);
    let run = |args: &[&str]| {
        let mut cmd = Command::new(&serf);
        cmd.args(args).env("SERF_RPC_ADDR", d.join("nowhere.sock"));
        run_with_timeout(&mut cmd, RUN).unwrap()
    };
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let unknown = run(&["members", "-bogus"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).starts_with("flag provided but not defined: -bogus\n"),
        "{}",
        stderr(&unknown)
    );
    assert!(stderr(&unknown).contains("Usage: serf members"));
    for (args, says) in [
        (
            &["query", "-relay-factor=2", "load"][..],
            "-relay-factor is not supported",
        ),
        (
            &["join", "-replay", "10.0.0.1"][..],
            "-replay is not supported",
        ),
        (&["rtt", "a", "b"][..], "rumor keeps no network coordinates"),
        (&["agent", "-node=x"][..], "rumor config import-serf"),
        (
            &["event", "-coalesce=maybe", "x"][..],
            "invalid boolean value \"maybe\"",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(run(&["no-such-command"]).status.code(), Some(127));
    let unreachable = run(&["members"]);
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(
        stderr(&unreachable).contains("nowhere.sock"),
        "{}",
        stderr(&unreachable)
    );

    let broken = d.join("broken.json");
    write_file(
        &broken,
        "{\n  \"node_name\": \"a\"\n  \"bind\": \"0.0.0.0\"\n}\n",
    );
    let typo = d.join("typo.json");
    write_file(&typo, r#"{"node_nmae": "a"}"#);
    for (file, says) in [
        (&broken, "broken.json:3:"),
        (&typo, "typo.json: unknown key \"node_nmae\""),
    ] {
        let out = rumor_command()
            .args(["config", "import-serf"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "nothing printed on error");
    }
}
