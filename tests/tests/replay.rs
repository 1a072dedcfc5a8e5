//! Replays, end to end: a query, a key change and a user event captured on the wire and sent
//! again — at once, after their deadline, after the target restarts — never run twice, and an
//! old key change never undoes a newer one.
//!
//! The "captured" datagrams are built here with the cluster's key, exactly as the asker or the
//! sender built them (same origin, id, Lamport time, deadline, reply address): what a replay
//! sends is the same bytes, re-sealed with a fresh nonce, which changes nothing the agent checks.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumor::cluster::keyring::{Key, Keyring};
use rumor::cluster::message::{Broadcast, EventSeq, QueryMsg};
use rumor::cluster::plumtree::{self, Out};
use rumor::cluster::query::{self, QueryFilter};
use rumor::cluster::wire::{self, Kind};
use rumor_handlers::event::UserEvent;
use rumor_tests::{Agent, cluster_slot, test_tempdir, wait_for};

const CONVERGE: Duration = Duration::from_secs(10);

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Starts `names` (the first as the seed) with `extra` and waits until all see each other.
fn cluster(names: &[&str], extra: &[&str]) -> Vec<Agent> {
    let mut agents: Vec<Agent> = Vec::new();
    for name in names {
        let mut args: Vec<&str> = extra.to_vec();
        let seed = agents.first().map(|s| s.addr().to_string());
        if let Some(seed) = &seed {
            args.extend(["--join", seed.as_str()]);
        }
        agents.push(Agent::start(name, &args));
    }
    for a in &agents {
        wait_alive(a, names.len());
    }
    agents
}

fn wait_alive(a: &Agent, n: usize) {
    wait_for(CONVERGE, "every member alive", || {
        let alive = a.members()?.iter().filter(|m| m.status == "alive").count();
        if alive == n {
            Ok(())
        } else {
            Err(format!("{} sees {alive} alive", a.name()))
        }
    });
}

/// Sends `body` to `to` as a datagram of `kind`, sealed with `key`.
fn send(kind: Kind, body: &[u8], key: &Key, to: SocketAddr) {
    let mut packet = Vec::new();
    wire::seal(
        kind,
        body,
        Some(&Keyring::new(vec![key.clone()])),
        &mut packet,
    );
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(&packet, to).unwrap();
}

/// A query from `origin` as its asker sent it, `timeout` long from `sent`.
fn query(
    origin: &Agent,
    id: u32,
    ltime: u64,
    name: &str,
    payload: &[u8],
    sent: SystemTime,
    timeout: Duration,
) -> Vec<u8> {
    Broadcast::Query(QueryMsg {
        ltime,
        id,
        name: name.into(),
        payload: payload.to_vec(),
        origin: origin.name().into(),
        reply_to: origin.addr(),
        timeout_ms: timeout.as_millis() as u32,
        deadline_unix_ms: unix_ms(sent + timeout),
        filter: QueryFilter::default(),
        ack: false,
    })
    .encode()
}

fn refused(a: &Agent) -> u64 {
    a.counter("queries_refused")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn wait_refused(a: &Agent, at_least: u64) {
    wait_for(CONVERGE, "the replay to be refused and counted", || {
        let n = refused(a);
        if n >= at_least {
            Ok(())
        } else {
            Err(format!("{n} refused"))
        }
    });
}

#[test]
fn a_replayed_query_never_runs_twice_even_after_a_restart_or_its_deadline() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let key = Key::generate();
    let runs = dir.path().join("runs");
    let handler = format!("query:uptime=echo ran >> {}; echo up", runs.display());
    let mut agents = cluster(
        &["qr-asker", "qr-target"],
        &["--encrypt", &key.to_base64(), "--event-handler", &handler],
    );
    let (asker, target) = (&agents[0], &agents[1]);
    let to = target.addr();

    // The query as its asker sent it, with 60 s to run: it runs once, its copy does not.
    let sent = SystemTime::now();
    let captured = query(asker, 7, 100, "uptime", b"", sent, Duration::from_secs(60));
    send(Kind::Query, &captured, &key, to);
    wait_for(CONVERGE, "the query to run", || match lines(&runs) {
        1 => Ok(()),
        n => Err(format!("{n} runs")),
    });
    send(Kind::Query, &captured, &key, to);
    // Something that does run after it: when it has, the copy was handled already.
    let marker = query(
        asker,
        8,
        101,
        "uptime",
        b"",
        SystemTime::now(),
        Duration::from_secs(8),
    );
    send(Kind::Query, &marker, &key, to);
    wait_for(CONVERGE, "the next query to run", || match lines(&runs) {
        2 => Ok(()),
        n => Err(format!("{n} runs")),
    });

    // After a restart of the target, within the deadline: refused (sent before it started).
    // "Before" allows for the clock skew between members, so the restart comes after it.
    let skew_passed = sent + query::QUERY_CLOCK_SKEW;
    while SystemTime::now() < skew_passed {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = refused(&agents[1]);
    agents[1].kill9();
    agents[1].restart();
    wait_alive(&agents[1], 2);
    send(Kind::Query, &captured, &key, to);
    wait_refused(&agents[1], before + 1);
    assert!(
        agents[1].log().contains("sent before this agent started"),
        "the refusal says why"
    );

    // A query whose deadline has passed (captured long ago): refused.
    let old = query(
        &agents[0],
        9,
        102,
        "uptime",
        b"",
        SystemTime::now() - Duration::from_secs(60),
        Duration::from_secs(5),
    );
    send(Kind::Query, &old, &key, to);
    wait_refused(&agents[1], before + 2);
    assert!(agents[1].log().contains("its deadline has passed"));
    assert_eq!(lines(&runs), 2, "no replay ran the handler");

    // Real queries still work (the handler runs on both nodes).
    let out = agents[0].cli_ok(&["query", "uptime"]);
    assert!(out.contains("qr-target"), "{out}");
    assert_eq!(lines(&runs), 4);
}

#[test]
fn a_replayed_key_change_never_undoes_a_newer_one_even_after_a_restart() {
    let _slot = cluster_slot();
    let key = Key::generate();
    let second = Key::generate();
    let mut agents = cluster(&["kr-admin", "kr-node"], &["--encrypt", &key.to_base64()]);
    let admin = &agents[0];
    admin.cli_ok(&["keys", "--install", &second.to_base64()]);
    admin.cli_ok(&["keys", "--remove", &second.to_base64()]);
    let keys_of = |a: &Agent| {
        rumor::cluster::keyring::Keyring::load(&a.data_dir().join("keyring.json"))
            .unwrap()
            .keys()
            .map(Key::to_base64)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys_of(&agents[1]), [key.to_base64()]);

    // The install, sent again as it was (its Lamport time is older than the removal's).
    let asker = (agents[0].name().to_string(), agents[0].addr());
    let install = |id, ltime| {
        Broadcast::Query(QueryMsg {
            ltime,
            id,
            name: query::KEYS_INSTALL.into(),
            payload: second.to_base64().into_bytes(),
            origin: asker.0.clone(),
            reply_to: asker.1,
            timeout_ms: 8_000,
            deadline_unix_ms: unix_ms(SystemTime::now() + Duration::from_secs(8)),
            filter: QueryFilter::default(),
            ack: false,
        })
        .encode()
    };
    send(Kind::Query, &install(42, 0), &key, agents[1].addr());
    wait_for(CONVERGE, "the replayed change to be refused", || {
        if agents[1]
            .log()
            .contains("is not later than the last one applied")
        {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    assert_eq!(
        keys_of(&agents[1]),
        [key.to_base64()],
        "the removed key stays removed"
    );

    // After a restart the order is still known (it is kept in the keyring file): the old
    // change, even as a query fresh enough to be taken, is refused for its order.
    agents[1].kill9();
    agents[1].restart();
    wait_alive(&agents[1], 2);
    let log_before = agents[1].log_len();
    send(Kind::Query, &install(43, 1), &key, agents[1].addr());
    wait_for(CONVERGE, "the replayed change to be refused again", || {
        if agents[1]
            .log_since(log_before)
            .contains("is not later than the last one applied")
        {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    assert_eq!(keys_of(&agents[1]), [key.to_base64()]);
    // A real change still applies everywhere.
    let out = agents[0].cli_ok(&["keys", "--install", &second.to_base64()]);
    assert_eq!(out.matches(": ok").count(), 2, "{out}");
}

#[test]
fn a_replayed_user_event_never_runs_twice_even_after_a_restart() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let key = Key::generate();
    let runs = dir.path().join("runs");
    let handler = format!("user:deploy=echo $SERF_SELF_NAME >> {}", runs.display());
    let mut agents = cluster(
        &["er-sender", "er-target"],
        &["--encrypt", &key.to_base64(), "--event-handler", &handler],
    );
    // A real event, as the sender's agent sends it: it runs once on each node.
    agents[0].cli_ok(&["event", "deploy", "v1"]);
    wait_for(CONVERGE, "the event to run on both", || {
        match lines(&runs) {
            2 => Ok(()),
            n => Err(format!("{n} runs")),
        }
    });
    let recent = agents[1].cli_ok(&["events", "--format", "json"]);
    let seen: serde_json::Value = serde_json::from_str(&recent).unwrap();
    let ltime = seen["events"][0]["ltime"]
        .as_u64()
        .expect("the event's Lamport time");
    let generation = agents[0].info().unwrap()["cluster"]["generation"]
        .as_u64()
        .expect("the sender's generation");
    // The same event, pushed again straight from "its sender".
    let event = Broadcast::User {
        event: UserEvent {
            ltime,
            name: "deploy".into(),
            payload: b"v1".to_vec(),
            coalesce: true,
            origin: agents[0].name().into(),
        },
        seq: EventSeq { generation, seq: 1 },
        sent_unix_ms: 0,
    }
    .encode();
    let mut frame = Vec::new();
    plumtree::encode(&Out::Direct(event.into()), &mut frame);
    send(Kind::Tree, &frame, &key, agents[1].addr());
    agents[1].kill9();
    agents[1].restart();
    wait_alive(&agents[1], 2);
    send(Kind::Tree, &frame, &key, agents[1].addr());
    // Something that does run afterwards, from the same sender.
    agents[0].cli_ok(&["event", "deploy", "v2"]);
    wait_for(CONVERGE, "the next event to run on both", || {
        match lines(&runs) {
            4 => Ok(()),
            n => Err(format!("{n} runs")),
        }
    });
    let ran = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(ran.matches("er-target").count(), 2, "{ran}");
}
