//! The broadcast tree between real processes (issue 21): a cluster larger than the direct-send
//! limit, so that user events travel the tree (eager pushes, announcements, grafts) rather
//! than straight from their sender to every member.
//!
//! The limit is 64 members; the hidden test setting `--direct-push-limit` lowers it, so ten
//! agents in network namespaces are "large". Every event is recorded by a shell handler
//! (`rumor_tests::Records`), so "every handler once" is a count of lines; that the tree carried
//! them shows in the `tree_*` counters of `rumor info`: copies that reached a node twice
//! (`tree_duplicates`, which only relays make) and events asked for after only their
//! announcement arrived (`tree_grafts`, the tree's repair). Needs root, like `faults.rs`.

use std::sync::Mutex;
use std::time::Duration;

use rumor_tests::netns::{Cluster, node};
use rumor_tests::{Rng, cluster_slot};

/// Agents in the cluster.
const NODES: usize = 10;
/// The lowered direct-send limit: every node has more members than this.
const LIMIT: &str = "2";
/// Bound for events to reach every handler once the network allows it.
const DELIVER: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

/// Sends `n` events named `PREFIX-K` through random nodes; returns their names.
fn send_from_random(c: &Cluster, rng: &mut Rng, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let name = format!("{prefix}-{k:03}");
            c.event(rng.below(c.len()), &name);
            name
        })
        .collect()
}

#[test]
fn the_broadcast_tree_carries_events_between_processes_with_and_without_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _slot = cluster_slot();
    let Some(mut c) = Cluster::start_with("rftree", NODES, "lan", &["--direct-push-limit", LIMIT])
    else {
        return;
    };
    let everyone: Vec<usize> = (0..c.len()).collect();
    let mut rng = Rng::new("tree");
    let mut all: Vec<String> = Vec::new();

    // Without loss: every event on every handler, and relays made duplicates on the way.
    let dup0 = c.counter_sum("tree_duplicates");
    let events = send_from_random(&c, &mut rng, "t", 30);
    let took = c.wait_delivered(&events, &everyone, DELIVER);
    let duplicates = c.counter_sum("tree_duplicates") - dup0;
    eprintln!(
        "FIGURE tree (lan, {NODES} processes, direct limit {LIMIT}): 30 events on every \
         handler {took:.2?} after the last was sent; {duplicates} copies pruned"
    );
    assert!(
        duplicates > 0,
        "no node got a second copy of any of 30 events: they did not travel the tree \
         (is --direct-push-limit applied?)"
    );
    all.extend(events);

    // Under 10 % loss on every link: still every event on every handler, the tree repairing
    // lost pushes by grafts.
    let grafts0 = c.counter_sum("tree_grafts");
    c.net.loss(0.10);
    let events = send_from_random(&c, &mut rng, "l", 50);
    let took = c.wait_delivered(&events, &everyone, DELIVER);
    let applied = c.net.counters();
    c.net.clear_loss();
    let grafts = c.counter_sum("tree_grafts") - grafts0;
    eprintln!(
        "FIGURE tree (lan, {NODES} processes, 10 % loss): 50 events on every handler {took:.2?} \
         after the last was sent; {grafts} grafts; the rule dropped {} of {} packets",
        applied.lost, applied.arrived
    );
    assert!(
        applied.lost > 0,
        "the loss rule dropped nothing: {applied:?}"
    );
    assert!(grafts > 0, "no event was grafted under 10 % loss");
    all.extend(events);

    // The control: n1 restarted with the default limit sends straight to every member, and
    // then nobody gets a second copy — so the duplicates above came from the tree.
    c.agents[0].terminate(Duration::from_secs(15));
    let args: Vec<String> = c
        .agent_args()
        .into_iter()
        .filter(|a| a != "--direct-push-limit" && a != LIMIT)
        .chain(["--join".into(), c.agents[1].addr().to_string()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.agents[0].restart_with(&args);
    c.wait_all_alive(Duration::from_secs(30), "n1 back with the default limit");
    let dup0 = c.counter_sum("tree_duplicates");
    let events: Vec<String> = (0..20).map(|k| format!("d-{k:03}")).collect();
    for e in &events {
        c.event(0, e);
    }
    c.wait_delivered(&events, &everyone, DELIVER);
    let direct_duplicates = c.counter_sum("tree_duplicates") - dup0;
    assert_eq!(
        direct_duplicates,
        0,
        "events pushed straight from {} made duplicates: the counter does not tell the tree apart",
        node(0)
    );
    all.extend(events);

    c.settle(1);
    c.exactly_once(&all)
        .unwrap_or_else(|e| panic!("every event on every handler once:\n{e}"));
}
