//! The dispatcher with real shell handlers in a temporary directory: the Serf contract byte for
//! byte, timeouts that kill whole process groups, concurrency across handlers, bounded output,
//! missing commands, queue overflow, coalescing, reload and query answers.
//!
//! Handlers write what they saw into files (atomically, via `mv`), and the tests wait on those
//! files or on the dispatcher's status with generous bounds instead of sleeping.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use rumor_handlers::{
    Dispatcher, Event, EventFilter, HandledEvents, HandlerConfig, LocalNode, MemberEventKind,
    MemberInfo, NoAnswer, OUTPUT_LIMIT, QueryEvent, Tags, UserEvent,
};

use common::{BOUND, status_of, wait_runs, wait_until};
use tempfile::TempDir;

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn member(name: &str, ip: &str, pairs: &[(&str, &str)]) -> MemberInfo {
    MemberInfo {
        name: name.into(),
        addr: ip.parse::<IpAddr>().unwrap(),
        port: 7946,
        tags: tags(pairs),
    }
}

fn join(members: Vec<MemberInfo>) -> Event {
    Event::Member {
        kind: MemberEventKind::Join,
        members,
    }
}

fn user(name: &str, ltime: u64, payload: &str) -> Event {
    Event::User(UserEvent {
        ltime,
        name: name.into(),
        payload: payload.as_bytes().to_vec(),
        coalesce: false,
        origin: "ops".into(),
    })
}

fn local() -> LocalNode {
    LocalNode {
        name: "lb-1".into(),
        tags: tags(&[("role", "lb"), ("dc-name", "east")]),
    }
}

/// A handler whose `$OUT` is the test's directory.
fn handler(dir: &Path, name: &str, filter: &str, command: &str) -> HandlerConfig {
    let mut config = HandlerConfig::new(name, EventFilter::parse(filter).unwrap(), command);
    config
        .env
        .insert("OUT".into(), dir.to_string_lossy().into_owned());
    config
}

async fn wait_for_file(path: &Path) -> Vec<u8> {
    wait_until(&format!("{}", path.display()), || path.exists()).await;
    std::fs::read(path).unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Collects log output for assertions (current-thread runtime: every task logs here).
#[derive(Clone, Default)]
struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

#[tokio::test]
async fn member_join_gets_serfs_environment_and_stdin_byte_for_byte() {
    let dir = TempDir::new().unwrap();
    let record = r#"env | grep -E '^(SERF|RUMOR)_(EVENT|SELF_|TAG_|USER_|QUERY_)' | sort > "$OUT/env.tmp"
        cat > "$OUT/stdin.tmp"
        mv "$OUT/env.tmp" "$OUT/env$SERF_TAG_ROLE"; mv "$OUT/stdin.tmp" "$OUT/stdin$SERF_TAG_ROLE""#;
    let config = handler(dir.path(), "record", "member-join", record);
    let dispatcher = Dispatcher::new(local(), vec![config]).unwrap();

    dispatcher.dispatch(join(vec![
        member("web-1", "10.0.0.2", &[("role", "web"), ("dc", "east")]),
        member("db\t1", "fd00::3", &[("zone", "a\nb"), ("role", "db")]),
    ]));

    let stdin = wait_for_file(&dir.path().join("stdinlb")).await;
    assert_eq!(
        String::from_utf8(stdin).unwrap(),
        "web-1\t10.0.0.2\tweb\tdc=east,role=web\n\
         db\\t1\tfd00::3\tdb\trole=db,zone=a\\nb\n"
    );
    let env = String::from_utf8(std::fs::read(dir.path().join("envlb")).unwrap()).unwrap();
    assert_eq!(
        env,
        "RUMOR_EVENT=member-join\n\
         RUMOR_SELF_NAME=lb-1\n\
         RUMOR_SELF_ROLE=lb\n\
         RUMOR_TAG_DC_NAME=east\n\
         RUMOR_TAG_ROLE=lb\n\
         SERF_EVENT=member-join\n\
         SERF_SELF_NAME=lb-1\n\
         SERF_SELF_ROLE=lb\n\
         SERF_TAG_DC_NAME=east\n\
         SERF_TAG_ROLE=lb\n"
    );

    // The local node's tags change at runtime: later runs see the new ones.
    dispatcher.set_local(LocalNode {
        name: "lb-1".into(),
        tags: tags(&[("role", "edge")]),
    });
    dispatcher.dispatch(join(vec![member("web-2", "10.0.0.4", &[])]));
    let stdin = wait_for_file(&dir.path().join("stdinedge")).await;
    assert_eq!(stdin, b"web-2\t10.0.0.4\t\t\n");
    let env = std::fs::read_to_string(dir.path().join("envedge")).unwrap();
    assert!(env.contains("SERF_SELF_ROLE=edge\n"), "{env}");
    assert!(!env.contains("DC_NAME"), "{env}");
}

#[tokio::test]
async fn user_event_gets_name_ltime_and_payload() {
    let dir = TempDir::new().unwrap();
    let deploy = handler(
        dir.path(),
        "deploy",
        "user:deploy",
        r#"{ echo "$SERF_USER_EVENT $SERF_USER_LTIME $RUMOR_USER_EVENT $RUMOR_USER_LTIME"; cat; } >> "$OUT/deploy""#,
    );
    let dispatcher = Dispatcher::new(local(), vec![deploy]).unwrap();

    dispatcher.dispatch(user("other", 3, "no"));
    dispatcher.dispatch(user("deploy", 7, "web v42"));
    let status = wait_runs(&dispatcher, "deploy", 1).await;
    assert_eq!(status.failures, 0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("deploy")).unwrap(),
        "deploy 7 deploy 7\nweb v42\n"
    );
}

#[tokio::test]
async fn timeout_kills_the_group_next_event_runs_and_other_handlers_are_not_delayed() {
    let dir = TempDir::new().unwrap();
    let slow_cmd = r#"payload=$(cat)
        if [ "$payload" = second ]; then echo ran > "$OUT/second"; exit 0; fi
        sleep 100 &
        echo $! > "$OUT/grandchild.tmp"; mv "$OUT/grandchild.tmp" "$OUT/grandchild"
        sleep 10"#;
    let mut slow = handler(dir.path(), "slow", "user:work", slow_cmd);
    slow.timeout = Duration::from_secs(1);
    let fast = handler(
        dir.path(),
        "fast",
        "user:work",
        r#"cat >> "$OUT/fast.log"; echo done > "$OUT/fast""#,
    );
    let dispatcher = Dispatcher::new(local(), vec![slow, fast]).unwrap();

    dispatcher.dispatch(user("work", 1, "first"));
    dispatcher.dispatch(user("work", 2, "second"));

    // The fast handler finishes while the slow one is still in its first run.
    wait_for_file(&dir.path().join("fast")).await;
    let fast_done = std::fs::metadata(dir.path().join("fast"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        status_of(&dispatcher, "slow").runs,
        0,
        "slow already finished"
    );

    // The slow one times out, then runs the next event.
    let grandchild: i32 = String::from_utf8(wait_for_file(&dir.path().join("grandchild")).await)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = wait_runs(&dispatcher, "slow", 2).await;
    assert_eq!(status.timeouts, 1);
    assert_eq!(status.failures, 1);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("second")).unwrap(),
        "ran\n"
    );
    let last = status.last.unwrap();
    assert_eq!(last.exit_code, Some(0));
    assert!(!last.timed_out);

    // The first slow run ended at least a second after it started, the fast run long before.
    let fast_done_ms = fast_done.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(fast_done_ms < last.finished_at_unix_ms);
    assert_eq!(lines(&dir.path().join("fast.log")), ["first", "second"]);

    // The background `sleep 100` died with its group.
    wait_until("the grandchild to be killed", || !process_alive(grandchild)).await;
}

/// Whether a process exists and is not a zombie waiting for its (new) parent to reap it.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        }
    }
}

#[tokio::test]
async fn huge_output_is_captured_bounded() {
    let dir = TempDir::new().unwrap();
    let noisy = handler(
        dir.path(),
        "noisy",
        "query",
        "head -c 104857600 /dev/zero; echo tail-marker",
    );
    let dispatcher = Dispatcher::new(local(), vec![noisy]).unwrap();
    let runs = dispatcher.dispatch_query(QueryEvent {
        ltime: 1,
        id: 1,
        name: "dump".into(),
        payload: vec![],
        origin: "ops".into(),
    });
    let mut receivers = runs.into_receivers();
    assert_eq!(receivers.len(), 1);
    let (name, receiver) = receivers.pop().unwrap();
    assert_eq!(name, "noisy");
    let result = tokio::time::timeout(BOUND, receiver)
        .await
        .unwrap()
        .unwrap();
    assert!(result.success(), "{result:?}");
    assert_eq!(result.stdout.len(), OUTPUT_LIMIT);
    assert!(result.stdout.ends_with(b"tail-marker\n"));
    assert!(result.truncated);
}

#[tokio::test]
async fn missing_command_fails_each_run_with_a_clear_log_and_nothing_stops() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let dir = TempDir::new().unwrap();
    let broken = handler(
        dir.path(),
        "broken",
        "user",
        "/nonexistent/rumor-handler-xyz",
    );
    let fine = handler(dir.path(), "fine", "user", r#"cat >> "$OUT/fine""#);
    let dispatcher = Dispatcher::new(local(), vec![broken, fine]).unwrap();

    dispatcher.dispatch(user("a", 1, "one"));
    dispatcher.dispatch(user("a", 2, "two"));
    let status = wait_runs(&dispatcher, "broken", 2).await;
    wait_runs(&dispatcher, "fine", 2).await;
    assert_eq!(status.failures, 2);
    assert_eq!(status.last.unwrap().exit_code, Some(127));
    assert_eq!(lines(&dir.path().join("fine")), ["one", "two"]);

    let text = logs.text();
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("handler failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{text}");
    for line in failures {
        assert!(
            line.contains("exited with code 127 (command not found)"),
            "{line}"
        );
        assert!(line.contains("handler=broken"), "{line}");
        assert!(line.contains("not found"), "{line}");
        assert!(line.contains("/nonexistent/rumor-handler-xyz"), "{line}");
    }
}

#[tokio::test]
async fn full_queue_drops_count_and_log() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let dir = TempDir::new().unwrap();
    let gated = handler(
        dir.path(),
        "gated",
        "user",
        r#"cat >> "$OUT/started"; while [ ! -e "$OUT/gate" ]; do sleep 0.02; done"#,
    );
    let dispatcher = Dispatcher::with_queue_capacity(local(), vec![gated], 2).unwrap();

    dispatcher.dispatch(user("e", 1, "1"));
    wait_until("the first run to start", || {
        dir.path().join("started").exists()
    })
    .await;
    for i in 2..=10 {
        dispatcher.dispatch(user("e", i, &i.to_string()));
    }
    let status = status_of(&dispatcher, "gated");
    assert_eq!(status.dropped, 7);
    assert_eq!(status.queued, 2);
    assert!(status.running);
    assert!(
        logs.text()
            .contains("handler queue full: dropped 1 event(s)"),
        "{}",
        logs.text()
    );

    std::fs::write(dir.path().join("gate"), "").unwrap();
    let status = wait_runs(&dispatcher, "gated", 3).await;
    assert_eq!(status.dropped, 7);
    assert_eq!(lines(&dir.path().join("started")), ["1", "2", "3"]);
    // The drops after the first log line are reported too, once the handler had room again.
    assert!(
        logs.text()
            .contains("handler queue was full: dropped 6 more event(s)"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn member_joins_within_the_window_become_one_run() {
    let dir = TempDir::new().unwrap();
    let mut coalesced = handler(
        dir.path(),
        "coalesced",
        "member-join",
        r#"cat >> "$OUT/joins"; echo run >> "$OUT/runs""#,
    );
    coalesced.coalesce = Some(Duration::from_millis(500));
    let dispatcher = Dispatcher::new(local(), vec![coalesced]).unwrap();

    for i in 0..5 {
        dispatcher.dispatch(join(vec![member(
            &format!("web-{i}"),
            &format!("10.0.0.{i}"),
            &[("role", "web")],
        )]));
    }
    wait_runs(&dispatcher, "coalesced", 1).await;
    assert_eq!(lines(&dir.path().join("runs")), ["run"]);
    let joins = lines(&dir.path().join("joins"));
    assert_eq!(
        joins,
        (0..5)
            .map(|i| format!("web-{i}\t10.0.0.{i}\tweb\trole=web"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn tag_filter_keeps_only_matching_members() {
    let dir = TempDir::new().unwrap();
    let mut web = handler(dir.path(), "web", "member-join", r#"cat >> "$OUT/web""#);
    web.tags_filter = BTreeMap::from([("role".to_string(), "web".to_string())]);
    let dispatcher = Dispatcher::new(local(), vec![web]).unwrap();

    dispatcher.dispatch(join(vec![member("db-1", "10.0.0.1", &[("role", "db")])]));
    dispatcher.dispatch(join(vec![
        member("db-2", "10.0.0.2", &[("role", "db")]),
        member("web-1", "10.0.0.3", &[("role", "web")]),
    ]));
    wait_runs(&dispatcher, "web", 1).await;
    assert_eq!(
        lines(&dir.path().join("web")),
        ["web-1\t10.0.0.3\tweb\trole=web"]
    );
    assert_eq!(status_of(&dispatcher, "web").runs, 1);
}

#[tokio::test]
async fn reload_keeps_queued_events() {
    let dir = TempDir::new().unwrap();
    let gated = r#"echo "$SERF_USER_LTIME $MARK" >> "$OUT/$NAME.log"
        while [ ! -e "$OUT/gate" ]; do sleep 0.02; done"#;
    let with = |name: &str, mark: &str| {
        let mut config = handler(dir.path(), name, "user", gated);
        config.env.insert("NAME".into(), name.into());
        config.env.insert("MARK".into(), mark.into());
        config
    };
    let dispatcher =
        Dispatcher::new(local(), vec![with("kept", "old"), with("removed", "old")]).unwrap();

    dispatcher.dispatch(user("e", 1, ""));
    let kept_log = dir.path().join("kept.log");
    let removed_log = dir.path().join("removed.log");
    wait_until("both first runs to start", || {
        kept_log.exists() && removed_log.exists()
    })
    .await;
    dispatcher.dispatch(user("e", 2, ""));
    dispatcher.dispatch(user("e", 3, ""));
    assert_eq!(status_of(&dispatcher, "kept").queued, 2);

    // Same name and command: keeps its queue, takes the new env. "removed" is dropped from the
    // set but finishes its queue. "added" starts.
    dispatcher
        .reload(vec![with("kept", "new"), with("added", "new")])
        .unwrap();
    let names: Vec<String> = dispatcher.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["kept", "added"]);
    assert_eq!(status_of(&dispatcher, "kept").queued, 2);

    std::fs::write(dir.path().join("gate"), "").unwrap();
    dispatcher.dispatch(user("e", 4, ""));
    wait_runs(&dispatcher, "kept", 4).await;
    wait_runs(&dispatcher, "added", 1).await;
    wait_until("the removed handler to finish its queue", || {
        lines(&removed_log).len() == 3
    })
    .await;
    assert_eq!(lines(&kept_log), ["1 old", "2 new", "3 new", "4 new"]);
    assert_eq!(lines(&dir.path().join("added.log")), ["4 new"]);
    assert_eq!(lines(&removed_log), ["1 old", "2 old", "3 old"]);

    // An invalid set changes nothing.
    assert!(
        dispatcher
            .reload(vec![with("x", "a"), with("x", "b")])
            .is_err()
    );
    assert_eq!(dispatcher.status().len(), 2);
}

#[tokio::test]
async fn query_answer_is_the_stdout_of_the_first_handler_that_exits_zero() {
    let dir = TempDir::new().unwrap();
    let failing = handler(dir.path(), "failing", "query:uptime", "echo nope; exit 1");
    let answering = handler(
        dir.path(),
        "answering",
        "query:uptime",
        r#"echo "up on $SERF_SELF_NAME for $(cat) ($SERF_QUERY_NAME $SERF_QUERY_LTIME)""#,
    );
    let dispatcher = Dispatcher::new(local(), vec![failing, answering]).unwrap();
    let query = |name: &str| QueryEvent {
        ltime: 9,
        id: 4,
        name: name.into(),
        payload: b"ops".to_vec(),
        origin: "ops".into(),
    };

    let runs = dispatcher.dispatch_query(query("uptime"));
    assert_eq!(
        runs.handlers().collect::<Vec<_>>(),
        ["failing", "answering"]
    );
    let answer = tokio::time::timeout(BOUND, runs.answer()).await.unwrap();
    assert_eq!(
        answer.as_deref(),
        Ok(&b"up on lb-1 for ops (uptime 9)\n"[..])
    );

    let none = dispatcher.dispatch_query(query("load"));
    assert!(none.is_empty());
    assert_eq!(none.answer().await, Err(NoAnswer::NoHandler));
}

/// After a restart the agent restores what each handler ran: those events are skipped when
/// the cluster delivers them again, while an event that never ran still runs even if newer
/// ones did (it was in flight when the node stopped), and a new handler skips the history.
#[tokio::test]
async fn restored_handled_events_are_skipped_and_nothing_else() {
    let dir = TempDir::new().unwrap();
    let ran = dir.path().join("ran");
    let config = handler(
        dir.path(),
        "h",
        "user",
        r#"echo "$SERF_USER_EVENT" >> "$OUT/ran""#,
    );
    let dispatcher = Dispatcher::new(local(), vec![config]).unwrap();
    let before_restart = HandledEvents {
        before: 0,
        events: [
            (5, "ops".to_string(), "five".to_string()),
            (9, "ops".to_string(), "nine".to_string()),
        ]
        .into(),
    };
    dispatcher.restore_handled(
        std::collections::BTreeMap::from([("h".into(), before_restart)]),
        None,
    );
    dispatcher.dispatch(user("five", 5, "")); // ran before: skipped
    dispatcher.dispatch(user("eight", 8, "")); // older than "nine" but never ran: runs
    dispatcher.dispatch(user("nine", 9, "")); // ran before: skipped
    dispatcher.dispatch(user("ten", 10, ""));
    wait_runs(&dispatcher, "h", 2).await;
    assert_eq!(lines(&ran), ["eight", "ten"]);
    let recorded = &dispatcher.handled()["h"];
    for ltime in [5, 8, 9, 10] {
        assert!(
            recorded.events.iter().any(|(t, _, _)| *t == ltime),
            "{recorded:?}"
        );
    }
    // The runs are handed over one by one for the agent's record, each once.
    let mut taken = Vec::new();
    while taken.len() < 2 {
        let runs = tokio::time::timeout(BOUND, dispatcher.handled_runs())
            .await
            .unwrap();
        taken.extend(runs.into_iter().map(|r| (r.handler, r.ltime, r.first)));
    }
    // Restored, so neither run starts the handler's record.
    assert_eq!(
        taken,
        [("h".to_string(), 8, false), ("h".to_string(), 10, false)]
    );
    assert!(dispatcher.take_handled().is_empty());
    assert_eq!(dispatcher.handled_size(), 1 + 4);

    // A handler without a saved record skips what happened before the restart.
    let fresh_log = dir.path().join("fresh");
    let fresh = Dispatcher::new(
        local(),
        vec![handler(
            dir.path(),
            "g",
            "user",
            r#"echo "$SERF_USER_EVENT" >> "$OUT/fresh""#,
        )],
    )
    .unwrap();
    fresh.restore_handled(Default::default(), Some(HandledEvents::before(10)));
    fresh.dispatch(user("old", 9, ""));
    fresh.dispatch(user("new", 10, ""));
    wait_runs(&fresh, "g", 1).await;
    assert_eq!(lines(&fresh_log), ["new"]);
}
