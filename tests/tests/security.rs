//! Encrypted gossip end to end: an encrypted cluster keeps strangers out, rotates its key
//! while events flow, and drops tampered or foreign packets, counting them.

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use rumor::cluster::keyring::{Key, Keyring};
use rumor::cluster::wire::{self, Kind};
use rumor_tests::{Agent, cluster_slot, start_cluster, test_tempdir, wait_for};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn undecryptable(agent: &Agent) -> u64 {
    agent
        .counter("packets_undecryptable")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A handler that records member joins and user events, one line each, per node.
fn recorder(dir: &Path) -> String {
    format!(
        "member-join,user=echo \"$SERF_EVENT $SERF_USER_EVENT\" >> {}/$SERF_SELF_NAME; cat >> {}/$SERF_SELF_NAME",
        dir.display(),
        dir.display()
    )
}

/// Starts `names` with `--encrypt key`, the first as the seed, and waits for convergence.
fn encrypted_cluster(names: &[&str], key: &str, handler: &str) -> Vec<Agent> {
    start_cluster(names, CONVERGE, |_| {
        ["--encrypt", key, "--event-handler", handler]
            .map(String::from)
            .to_vec()
    })
}

fn wait_for_event_everywhere(agents: &[Agent], dir: &Path, name: &str) {
    for a in agents {
        let file = dir.join(a.name());
        wait_for(CONVERGE, "the event to reach every handler", || {
            let got = read(&file);
            if got.contains(&format!("user {name}\n")) {
                Ok(())
            } else {
                Err(format!("{}: {got:?}", a.name()))
            }
        });
    }
}

#[test]
fn strangers_without_the_key_cannot_join_an_encrypted_cluster() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let key = Key::generate().to_base64();
    let handler = recorder(dir.path());
    let agents = encrypted_cluster(&["enc-1", "enc-2", "enc-3"], &key, &handler);
    agents[0].cli_ok(&["event", "hello"]);
    wait_for_event_everywhere(&agents, dir.path(), "hello");

    // A node with another key and a node with none keep trying (retry-join never gives up).
    let seed = agents[0].addr().to_string();
    let other_key = Key::generate().to_base64();
    let before = undecryptable(&agents[0]);
    let wrong = Agent::start(
        "intruder-4",
        &["--encrypt", &other_key, "--retry-join", &seed],
    );
    let open = Agent::start("intruder-5", &["--retry-join", &seed]);
    // Both intruders counted and their reasons logged (either may be first: wait for both).
    wait_for(
        CONVERGE,
        "the seed to count and explain both intruders' attempts",
        || {
            let n = undecryptable(&agents[0]) - before;
            let log = agents[0].log();
            let wrong_key = log.contains("no key opens this message");
            let no_key = log.contains("packet not encrypted");
            if n >= 2 && wrong_key && no_key {
                Ok(())
            } else {
                Err(format!(
                    "{n} counted; logged: wrong key {wrong_key}, not encrypted {no_key}"
                ))
            }
        },
    );
    // A user event sent by an intruder reaches nobody in the cluster.
    wrong.cli_ok(&["event", "from-intruder"]);
    open.cli_ok(&["event", "from-intruder"]);
    agents[1].cli_ok(&["event", "after"]);
    wait_for_event_everywhere(&agents, dir.path(), "after");
    for a in &agents {
        let members = a.members().unwrap();
        assert_eq!(members.len(), 3, "{}: {members:?}", a.name());
        let got = read(&dir.path().join(a.name()));
        assert!(!got.contains("intruder"), "{}: {got}", a.name());
    }
    // And the intruders see nobody.
    assert_eq!(wrong.members().unwrap().len(), 1);
    assert!(
        wrong.log().contains("encryption is set up the same"),
        "the intruder is told why"
    );
}

#[test]
fn keys_rotate_on_a_live_cluster_and_survive_a_restart() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let old = Key::generate().to_base64();
    let new = Key::generate().to_base64();
    let handler = recorder(dir.path());
    let mut agents = encrypted_cluster(&["rot-1", "rot-2", "rot-3"], &old, &handler);
    let admin = &agents[0];

    admin.cli_ok(&["event", "before"]);
    wait_for_event_everywhere(&agents, dir.path(), "before");
    let out = admin.cli_ok(&["keys", "--install", &new]);
    assert_eq!(out.matches(": ok").count(), 3, "{out}");
    admin.cli_ok(&["event", "installed"]);
    wait_for_event_everywhere(&agents, dir.path(), "installed");
    admin.cli_ok(&["keys", "--use", &new]);
    admin.cli_ok(&["event", "switched"]);
    wait_for_event_everywhere(&agents, dir.path(), "switched");

    // The primary key cannot be removed: every node refuses and the command fails.
    let refused = admin.cli(&["keys", "--remove", &new]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("3 of 3 nodes"));
    admin.cli_ok(&["keys", "--remove", &old]);
    admin.cli_ok(&["event", "rotated"]);
    wait_for_event_everywhere(&agents, dir.path(), "rotated");
    let listing: Value =
        serde_json::from_str(&admin.cli_ok(&["keys", "--list", "--format", "json"])).unwrap();
    for node in listing["nodes"].as_object().unwrap().values() {
        assert_eq!(node["keys"], serde_json::json!([new]), "{listing}");
    }

    // A restarted node comes back with the new keyring from its data dir: its --encrypt
    // flag still names the old key, which no longer opens anything.
    let restarted = &mut agents[2];
    restarted.kill9();
    restarted.restart();
    let keyring = Keyring::load(&restarted.data_dir().join("keyring.json")).unwrap();
    assert_eq!(keyring.primary().unwrap().to_base64(), new);
    let agents_ref = &agents;
    for a in agents_ref {
        wait_for(
            CONVERGE,
            "the restarted node to be alive everywhere",
            || {
                let alive = a.members()?.iter().filter(|m| m.status == "alive").count();
                if alive == 3 {
                    Ok(())
                } else {
                    Err(format!("{} sees {alive}", a.name()))
                }
            },
        );
    }
    agents[2].cli_ok(&["event", "after-restart"]);
    wait_for_event_everywhere(&agents, dir.path(), "after-restart");
}

#[test]
fn tampered_and_foreign_packets_are_dropped_and_counted() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let key = Key::generate();
    let handler = recorder(dir.path());
    let agents = encrypted_cluster(&["tamper-1", "tamper-2"], &key.to_base64(), &handler);
    let target = &agents[1];
    let before = undecryptable(target);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();

    // A packet sealed with the cluster's key, with one bit flipped.
    let mut tampered = Vec::new();
    wire::seal(
        Kind::Swim,
        b"not really swim",
        Some(&Keyring::new(vec![key.clone()])),
        &mut tampered,
    );
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    udp.send_to(&tampered, target.addr()).unwrap();
    // A well-formed packet from another cluster (another key), as if replayed here.
    let mut foreign = Vec::new();
    wire::seal(
        Kind::Swim,
        b"foreign",
        Some(&Keyring::new(vec![Key::generate()])),
        &mut foreign,
    );
    udp.send_to(&foreign, target.addr()).unwrap();
    // A plain packet to an encrypted cluster.
    let mut plain = Vec::new();
    wire::seal(Kind::Swim, b"plain", None, &mut plain);
    udp.send_to(&plain, target.addr()).unwrap();

    wait_for(CONVERGE, "3 packets counted as undecryptable", || {
        match undecryptable(target) - before {
            3 => Ok(()),
            n => Err(format!("{n} counted")),
        }
    });
    assert!(
        target.log().contains("dropped packet"),
        "the drop is logged"
    );
    // The cluster is unharmed.
    agents[0].cli_ok(&["event", "still-fine"]);
    wait_for_event_everywhere(&agents, dir.path(), "still-fine");
}
