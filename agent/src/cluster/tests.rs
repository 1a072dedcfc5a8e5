//! Several real cluster actors in one process, talking over loopback UDP and TCP.

use std::time::Duration;

use rumor_handlers::event::{Event, MemberEventKind, Tags};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

use super::*;

struct Node {
    handle: ClusterHandle,
    events: mpsc::UnboundedReceiver<Event>,
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

/// A loopback node's settings: `local` timing, a `role` tag, generous reap timeouts.
fn config(name: &str) -> ClusterConfig {
    ClusterConfig {
        node: name.to_string(),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: "127.0.0.1:0".parse().unwrap(),
        profile: Profile::Local,
        tags: Tags::from([("role".to_string(), format!("r-{name}"))]),
        join: vec![],
        retry_join: vec![],
        max_event_bytes: message::MAX_EVENT_BYTES_CEILING,
        max_response_bytes: 1024,
        reconnect_timeout: Duration::from_secs(3600),
        tombstone_timeout: Duration::from_secs(3600),
        keyring: None,
        keyring_file: None,
        snapshot_file: None,
        rejoin_after_leave: false,
        direct_push_limit: super::plumtree::DIRECT_LIMIT,
        event_retention: Default::default(),
    }
}

async fn node(name: &str) -> Node {
    node_with(config(name)).await
}

async fn node_with(config: ClusterConfig) -> Node {
    let running = start(config).await.expect("start");
    Node {
        handle: running.handle,
        events: running.events,
        addr: running.local.addr.to_string(),
        task: running.task,
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node lists `name` with `status`.
async fn wait_listed(nodes: &[Node], name: &str, status: Status) {
    for n in nodes {
        wait_for(&format!("{name} {status:?}"), async || {
            statuses(n).await.contains(&(name.to_string(), status))
        })
        .await;
    }
}

/// How many members `handle` lists alive.
async fn alive_count(handle: &ClusterHandle) -> usize {
    let members = handle.members().await.unwrap();
    members.iter().filter(|m| m.status == Status::Alive).count()
}

async fn statuses(n: &Node) -> Vec<(String, Status)> {
    let mut v: Vec<_> = n
        .handle
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.status))
        .collect();
    v.sort();
    v
}

/// Drains events until `pred` matches one; returns how many matched in total afterwards.
async fn next_user_event(n: &mut Node) -> rumor_handlers::event::UserEvent {
    loop {
        let e = timeout(Duration::from_secs(10), n.events.recv())
            .await
            .expect("event in time")
            .expect("stream open");
        if let Event::User(u) = e {
            return u;
        }
    }
}

/// `count` nodes named `{prefix}0`, `{prefix}1`, ..., all joined through the first, once
/// every one lists them all alive.
async fn joined_cluster(prefix: &str, count: usize) -> Vec<Node> {
    joined_cluster_with(prefix, count, |_| {}).await
}

/// [`joined_cluster`] with each node's config changed by `tune` first.
async fn joined_cluster_with(
    prefix: &str,
    count: usize,
    tune: impl Fn(&mut ClusterConfig),
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..count {
        let mut config = config(&format!("{prefix}{i}"));
        tune(&mut config);
        nodes.push(node_with(config).await);
    }
    let seed = nodes[0].addr.clone();
    for n in &nodes[1..] {
        let report = n.handle.join(std::slice::from_ref(&seed)).await.unwrap();
        assert_eq!(report.joined, 1);
    }
    for n in &nodes {
        wait_for(&format!("{count} alive members"), async || {
            let s = statuses(n).await;
            s.len() == count && s.iter().all(|(_, st)| *st == Status::Alive)
        })
        .await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_spread_events_tags_and_leaves() {
    let mut nodes = joined_cluster("n", 5).await;
    // Tags arrived with the members.
    let members = nodes[4].handle.members().await.unwrap();
    assert!(
        members
            .iter()
            .all(|m| m.tags["role"] == format!("r-{}", m.name))
    );

    // A user event reaches every node exactly once, the sender included.
    let ltime = nodes[2]
        .handle
        .send_event("deploy".into(), b"v1".to_vec(), true)
        .await
        .unwrap();
    for n in nodes.iter_mut() {
        let e = next_user_event(n).await;
        assert_eq!(
            (e.name.as_str(), &e.payload[..], e.ltime),
            ("deploy", &b"v1"[..], ltime)
        );
        assert_eq!(e.origin, "n2");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in nodes.iter_mut() {
        while let Ok(e) = n.events.try_recv() {
            assert!(!matches!(e, Event::User(_)), "duplicate delivery: {e:?}");
        }
    }

    // A tag change reaches everyone.
    nodes[1]
        .handle
        .update_tags(Tags::from([("version".into(), "2".into())]), vec![])
        .await
        .unwrap();
    for n in &nodes {
        wait_for("tag update", async || {
            n.handle
                .members()
                .await
                .unwrap()
                .iter()
                .any(|m| m.name == "n1" && m.tags.get("version").map(String::as_str) == Some("2"))
        })
        .await;
    }

    // A graceful leave is seen as `left`, and the leaving actor stops.
    let leaver = nodes.pop().unwrap();
    timeout(Duration::from_secs(5), leaver.handle.leave())
        .await
        .expect("leave completes in time")
        .unwrap();
    timeout(Duration::from_secs(10), leaver.task)
        .await
        .expect("actor stops")
        .unwrap();
    wait_listed(&nodes, "n4", Status::Left).await;
    // Nobody saw it fail.
    for n in nodes.iter_mut() {
        while let Ok(e) = n.events.try_recv() {
            if let Event::Member { kind, members } = &e {
                assert!(
                    !(*kind == MemberEventKind::Failed && members[0].name == "n4"),
                    "n4 reported failed"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_allowed_event_crosses_between_nodes_with_the_longest_names() {
    let a = "a".repeat(identity::MAX_NODE_NAME);
    let b = "b".repeat(identity::MAX_NODE_NAME);
    let na = node(&a).await;
    let mut nb = node(&b).await;
    nb.handle
        .join(std::slice::from_ref(&na.addr))
        .await
        .unwrap();
    wait_for("2 members", async || statuses(&na).await.len() == 2).await;
    let name = "e".repeat(message::MAX_EVENT_NAME);
    let payload = vec![b'x'; message::MAX_EVENT_BYTES_CEILING - name.len()];
    na.handle
        .send_event(name.clone(), payload.clone(), true)
        .await
        .unwrap();
    let e = next_user_event(&mut nb).await;
    assert_eq!((e.name, e.payload), (name, payload));

    let too_big = vec![b'x'; message::MAX_EVENT_BYTES_CEILING];
    let err = na
        .handle
        .send_event("big".into(), too_big, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("limit is 1100 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_does_not_replay_events_sent_before_it_joined() {
    let a = node("a").await;
    let mut b = node("b").await;
    // Sent while alone: only push-pull can carry it to b.
    a.handle
        .send_event("early".into(), vec![], true)
        .await
        .unwrap();
    b.handle.join(std::slice::from_ref(&a.addr)).await.unwrap();
    // b joined after the event: it must not run handlers for history.
    a.handle
        .send_event("later".into(), vec![], true)
        .await
        .unwrap();
    let e = next_user_event(&mut b).await;
    assert_eq!(e.name, "later");
}

/// Answers every query this node receives with "NAME:PAYLOAD", as a handler would.
fn answer_queries(mut n: Node) -> (ClusterHandle, String) {
    let handle = n.handle.clone();
    let addr = n.addr.clone();
    tokio::spawn(async move {
        while let Some(e) = n.events.recv().await {
            if let Event::Query(q) = e {
                let answer = format!("{}:{}", q.name, String::from_utf8_lossy(&q.payload));
                let _ = n
                    .handle
                    .respond(q.origin, q.id, Ok(answer.into_bytes()))
                    .await;
            }
        }
    });
    (handle, addr)
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<query::QueryUpdate>,
) -> (Vec<String>, bool, Vec<String>) {
    let mut answers = Vec::new();
    while let Some(u) = rx.recv().await {
        match u {
            query::QueryUpdate::Answer { node, payload, .. } => {
                answers.push(format!("{node}={}", String::from_utf8_lossy(&payload.0)));
            }
            query::QueryUpdate::Done { timed_out, missing } => {
                answers.sort();
                return (answers, timed_out, missing);
            }
            _ => {}
        }
    }
    panic!("query stream ended without Done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_return_as_soon_as_every_expected_node_answered() {
    let a = node("qa").await;
    let b = node("qb").await;
    let c = node("qc").await;
    let seed = a.addr.clone();
    b.handle.join(std::slice::from_ref(&seed)).await.unwrap();
    c.handle.join(std::slice::from_ref(&seed)).await.unwrap();
    let (ha, _) = answer_queries(a);
    let (_hb, _) = answer_queries(b);
    let (_hc, _) = answer_queries(c);
    wait_for("3 alive", async || alive_count(&ha).await == 3).await;

    let started = Instant::now();
    let rx = ha
        .query(QueryParams {
            name: "uptime".into(),
            payload: b"x".to_vec(),
            timeout: Some(Duration::from_secs(10)),
            ack: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (answers, timed_out, missing) = collect(rx).await;
    assert_eq!(answers, ["qa=uptime:x", "qb=uptime:x", "qc=uptime:x"]);
    assert!(!timed_out && missing.is_empty());
    // Well before the 10 s timeout: it did not wait for it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // Only the node whose role tag matches answers.
    let rx = ha
        .query(QueryParams {
            name: "uptime".into(),
            filter: query::QueryFilter {
                nodes: vec![],
                tags: vec![("role".into(), "r-qb".into())],
            },
            timeout: Some(Duration::from_secs(10)),
            ack: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(collect(rx).await.0, ["qb=uptime:"]);

    // The built-in ping needs no handler.
    let rx = ha
        .query(QueryParams {
            name: query::PING.into(),
            timeout: Some(Duration::from_secs(10)),
            ack: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (answers, timed_out, _) = collect(rx).await;
    assert_eq!(answers, ["qa=pong", "qb=pong", "qc=pong"]);
    assert!(!timed_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_answers_are_truncated_with_a_marker_not_dropped() {
    let a = node("ta").await;
    let b = node("tb").await;
    b.handle.join(std::slice::from_ref(&a.addr)).await.unwrap();
    let ha = a.handle.clone();
    // tb answers with 5000 bytes; its limit is 1024.
    let mut b = b;
    tokio::spawn(async move {
        while let Some(e) = b.events.recv().await {
            if let Event::Query(q) = e {
                let _ = b.handle.respond(q.origin, q.id, Ok(vec![b'x'; 5000])).await;
            }
        }
    });
    drop(a.events);
    wait_for("2 alive", async || alive_count(&ha).await == 2).await;
    let mut rx = ha
        .query(QueryParams {
            name: "big".into(),
            filter: query::QueryFilter {
                nodes: vec!["tb".into()],
                tags: vec![],
            },
            timeout: Some(Duration::from_secs(10)),
            ack: true,
            ..Default::default()
        })
        .await
        .unwrap();
    loop {
        match rx.recv().await.expect("an answer before the stream ends") {
            query::QueryUpdate::Answer {
                node,
                payload,
                truncated,
            } => {
                assert_eq!(node, "tb");
                assert!(truncated);
                assert_eq!(payload.0.len(), 1024);
                assert!(payload.0.ends_with(query::TRUNCATED_MARKER));
                break;
            }
            query::QueryUpdate::Done { .. } => panic!("no answer arrived"),
            _ => {}
        }
    }
}

/// A node writes the members it learned by joining to its snapshot at once, not at the next
/// snapshot interval: one that crashes right after joining still rejoins on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_reaches_the_snapshot_before_a_crash_right_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(snapshot::SNAPSHOT_FILE);
    let seed = node("seed").await;
    let mut c = config("joiner");
    c.snapshot_file = Some(path.clone());
    let joiner = node_with(c).await;
    joiner
        .handle
        .join(std::slice::from_ref(&seed.addr))
        .await
        .unwrap();
    // Crash at once: well within the half-second snapshot interval.
    joiner.task.abort();
    let _ = joiner.task.await;
    wait_for("the snapshot to list the seed", async || {
        snapshot::load(&path).0.alive.contains_key("seed")
    })
    .await;
}

/// A crashed member is declared failed by independent confirmations (suspicion.rs), before
/// foca's suspicion timer would have: on `lan` timing that timer alone takes 4·log10(5) = 2.8 s
/// after the first failed probe, and the confirmation counter shows which path decided. Its
/// closed port makes the host refuse packets to it (refused.rs), so the first packet sent
/// there starts the suspicion, without waiting for a probe period to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_is_declared_failed_by_confirmed_suspicion() {
    let mut nodes = Vec::new();
    for i in 0..5 {
        let mut c = config(&format!("c{i}"));
        c.profile = Profile::Lan;
        nodes.push(node_with(c).await);
    }
    let seed = nodes[0].addr.clone();
    for n in &nodes[1..] {
        n.handle.join(std::slice::from_ref(&seed)).await.unwrap();
    }
    for n in &nodes {
        wait_for("5 alive members", async || {
            let s = statuses(n).await;
            s.len() == 5 && s.iter().all(|(_, st)| *st == Status::Alive)
        })
        .await;
    }
    // The member list published to readers that must not wait (DNS, templates) follows too.
    let mut watched = nodes[0].handle.watch_members();
    assert_eq!(watched.borrow_and_update().len(), 5);
    // Crash c4: its actor and socket vanish without a word.
    let crashed = nodes.pop().unwrap();
    crashed.task.abort();
    let _ = crashed.task.await;
    let killed = Instant::now();
    wait_listed(&nodes, "c4", Status::Failed).await;
    let took = killed.elapsed();
    let failed_in_view = |list: &MemberList| {
        list.iter()
            .any(|m| m.name == "c4" && m.status == Status::Failed)
    };
    let published = timeout(Duration::from_secs(10), watched.wait_for(failed_in_view)).await;
    assert!(
        published.is_ok(),
        "the published list does not show c4 failed"
    );
    let (mut confirmed, mut refused) = (0, 0);
    for n in &nodes {
        let counters = n.handle.info().await.unwrap().counters;
        confirmed += counters.suspicions_confirmed;
        refused += counters.packets_refused;
    }
    eprintln!(
        "c4 declared failed everywhere {took:?} after the crash \
         ({confirmed} confirmed, {refused} packets refused)"
    );
    assert!(
        confirmed > 0,
        "no node declared c4 down by confirmation; foca's timer did it after {took:?}"
    );
    assert!(
        refused > 0,
        "no node noticed that c4's host refused its packets"
    );
    // Nobody alive was declared failed on the way.
    for n in &nodes {
        let s = statuses(n).await;
        assert_eq!(
            s.iter().filter(|(_, st)| *st == Status::Alive).count(),
            4,
            "{s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_join_keeps_trying_until_the_seed_appears() {
    // A port with nothing on it yet: the seed will start there later. Another test may take
    // the port (its TCP side) in between; then the scenario starts again on a new one. A key
    // of this test's own keeps the joiner out of whatever cluster took the port.
    let key = super::keyring::Key::generate();
    for _attempt in 0..5 {
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let seed_addr = format!("127.0.0.1:{port}");
        let mut config = config("late-joiner");
        config.keyring = Some(super::keyring::Keyring::new(vec![key.clone()]));
        config.retry_join = vec![seed_addr.clone()];
        let joiner = start(config.clone()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // let the first attempts fail
        config.node = "seed".into();
        config.bind = seed_addr.parse().unwrap();
        config.advertise = config.bind;
        config.retry_join = vec![];
        let seed = match start(config).await {
            Ok(seed) => seed,
            Err(StartError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                continue;
            }
            Err(e) => panic!("the seed binds the port: {e:?}"),
        };
        wait_for("the joiner to reach the seed", async || {
            seed.handle.members().await.unwrap().len() == 2
                && joiner.handle.members().await.unwrap().len() == 2
        })
        .await;
        return;
    }
    panic!("five free ports were all taken before the seed could bind one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_live_members_name_refuses_to_join_and_both_sides_report_it() {
    let seed = node("seed").await;
    let original = node("dup").await;
    original
        .handle
        .join(std::slice::from_ref(&seed.addr))
        .await
        .unwrap();
    wait_for("2 alive", async || {
        seed.handle.members().await.unwrap().len() == 2
    })
    .await;

    let impostor = node("dup").await;
    let err = impostor
        .handle
        .join(std::slice::from_ref(&seed.addr))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already used by a live member"), "{err}");
    assert!(err.contains(&original.addr), "names the other node: {err}");

    // The seed kept the original and reports the conflict; so does the original itself.
    wait_for("the conflict reported on the seed", async || {
        !seed.handle.info().await.unwrap().name_conflicts.is_empty()
    })
    .await;
    let members = seed.handle.members().await.unwrap();
    let dup = members.iter().find(|m| m.name == "dup").unwrap();
    assert_eq!(
        dup.port.to_string(),
        original.addr.rsplit(':').next().unwrap()
    );
    wait_for("the conflict reported on the original", async || {
        original
            .handle
            .info()
            .await
            .unwrap()
            .name_conflicts
            .iter()
            .any(|c| c.contains("this node's name"))
    })
    .await;
}

/// Periodic anti-entropy opens with a digest: a peer that knows the same answers "in sync"
/// and nothing crosses; a peer that differs answers with its state, and each side gets the
/// user events it has not delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_exchanges_skip_equal_states_and_carry_missed_events() {
    let a = node("da").await;
    let mut b = node("db").await;
    b.handle
        .join(std::slice::from_ref(&a.addr))
        .await
        .expect("join");
    for n in [&a, &b] {
        wait_for("2 alive members", async || statuses(n).await.len() == 2).await;
    }
    let b_addr: std::net::SocketAddr = b.addr.parse().unwrap();
    let digest_of = async |n: &Node| {
        let state = n.handle.push_pull.local_state(false, None).await.unwrap();
        node::exchange::digest(&state)
    };
    wait_for("a and b to agree", async || {
        digest_of(&a).await == digest_of(&b).await
    })
    .await;
    let digest = node::exchange::Mode::Digest;
    let answer = push_pull::exchange(b_addr, digest, false, &a.handle.push_pull)
        .await
        .expect("exchange");
    assert!(answer.is_none(), "equal states must not be exchanged");
    wait_for("b to count the in-sync exchange", async || {
        b.handle.info().await.unwrap().counters.push_pull_in_sync >= 1
    })
    .await;

    // A node b never heard of sent an event: its exchange with b differs, and b gets the
    // event it missed (c's own, which c keeps for others).
    let c = node("dc").await;
    c.handle
        .send_event("missed".into(), b"by gossip".to_vec(), false)
        .await
        .unwrap();
    let answer = push_pull::exchange(b_addr, digest, false, &c.handle.push_pull)
        .await
        .expect("exchange");
    assert_eq!(answer.expect("b's state").from.name, "db");
    let e = next_user_event(&mut b).await;
    assert_eq!(
        (e.name.as_str(), &e.payload[..]),
        ("missed", &b"by gossip"[..])
    );
}

/// Copies of broadcasts the nodes received on the tree, in all.
async fn tree_copies(nodes: &[Node]) -> u64 {
    let mut total = 0;
    for n in nodes {
        total += n.handle.info().await.unwrap().counters.tree_duplicates;
    }
    total
}

/// Sends a user event from `nodes[from]` and waits until every node has it.
async fn send_and_receive(nodes: &mut [Node], from: usize, name: &str) {
    nodes[from]
        .handle
        .send_event(name.into(), vec![], false)
        .await
        .unwrap();
    for n in nodes.iter_mut() {
        assert_eq!(next_user_event(n).await.name, name);
    }
}

/// Kills node 4 without a goodbye (still listed by the others), then checks that two events
/// from other nodes reach every survivor exactly once.
async fn still_delivered_after_a_crash(nodes: &mut Vec<Node>) {
    let dead = nodes.remove(4);
    dead.task.abort();
    let _ = dead.task.await;
    for (k, from) in [1, 6].into_iter().enumerate() {
        send_and_receive(nodes, from, &format!("after-kill-{k}")).await;
    }
    assert_no_second_delivery(nodes);
}

/// Asserts that no node has a user event left to deliver (each arrived once).
fn assert_no_second_delivery(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        while let Ok(e) = n.events.try_recv() {
            assert!(!matches!(e, Event::User(_)), "duplicate delivery: {e:?}");
        }
    }
}

/// User events travel the broadcast tree (forced here: 8 nodes would get them directly): the
/// first one floods the links and prunes the redundant ones, after which events from any node
/// reach every node exactly once, with no copies at all; and a node that was killed is routed
/// around.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_first_event_later_ones_follow_the_tree_without_copies() {
    let mut nodes = joined_cluster_with("t", 8, |c| c.direct_push_limit = 0).await;
    send_and_receive(&mut nodes, 0, "first").await;
    // Links are made as members appear, so the first event meets some redundant ones.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_first = tree_copies(&nodes).await;
    assert!(after_first > 0, "8 nodes with 4 links each are not a tree");
    for (k, from) in [3, 7, 5].into_iter().enumerate() {
        send_and_receive(&mut nodes, from, &format!("tree-{k}")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        tree_copies(&nodes).await,
        after_first,
        "later events met no copies"
    );

    // Kill one node without a goodbye: the others still get everything (the tree is
    // repaired by grafts from announcements, or by new links once it is declared down).
    still_delivered_after_a_crash(&mut nodes).await;
}

/// In a small cluster a node sends its own events to every member itself: even the first one
/// meets no copies (on the tree it floods the links), every node gets each event once, and a
/// killed node, still listed, does not keep the others from getting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_small_cluster_events_go_straight_from_their_sender_to_everyone() {
    let mut nodes = joined_cluster("d", 8).await;
    for (k, from) in [0, 3, 7].into_iter().enumerate() {
        send_and_receive(&mut nodes, from, &format!("direct-{k}")).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tree_copies(&nodes).await, 0, "nobody relayed anything");

    still_delivered_after_a_crash(&mut nodes).await;
}
