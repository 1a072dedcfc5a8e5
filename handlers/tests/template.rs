//! The template runtime driven by the dispatcher, with a member list published as the agent
//! publishes it: a render at start, renders only when the members changed, quiescence that
//! turns a burst into one render, one reload for templates that share it, and a refused check
//! that keeps the live file.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumor_handlers::template::{TemplateSource, Wait};
use rumor_handlers::{
    Dispatcher, Event, EventFilter, HandlerConfig, LocalNode, Member, MemberEventKind,
    MemberStatus, Members, RuntimeConfig, RuntimeDetails, TemplateConfig, TemplateStatus,
};

use common::{status_of, wait_runs, wait_until};

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        address: "10.0.0.1".parse().unwrap(),
        port: 7946,
        status: MemberStatus::Alive,
        tags: [("role".to_string(), "web".to_string())].into(),
        generation: 1,
        passing: true,
    }
}

fn members(names: &[&str]) -> Members {
    Arc::new(names.iter().map(|n| member(n)).collect())
}

fn join(name: &str) -> Event {
    Event::Member {
        kind: MemberEventKind::Join,
        members: vec![rumor_handlers::MemberInfo {
            name: name.into(),
            addr: "10.0.0.1".parse().unwrap(),
            port: 7946,
            tags: Default::default(),
        }],
    }
}

/// A template handler named `name` writing `dir/name.txt` from `text`.
fn template(
    dir: &Path,
    name: &str,
    text: &str,
    edit: impl FnOnce(&mut TemplateConfig),
) -> HandlerConfig {
    let source_path = dir.join(format!("{name}.j2"));
    std::fs::write(&source_path, text).unwrap();
    let mut config = TemplateConfig::new(
        TemplateSource::read(&source_path, vec![]).unwrap(),
        dir.join(format!("{name}.txt")),
    );
    edit(&mut config);
    HandlerConfig::with_runtime(
        name,
        EventFilter::parse("member-join,member-leave").unwrap(),
        RuntimeConfig::Template(Box::new(config)),
    )
}

fn template_status(dispatcher: &Dispatcher, name: &str) -> TemplateStatus {
    match status_of(dispatcher, name).runtime {
        Some(RuntimeDetails::Template(t)) => t,
        other => panic!("{name} is not a template handler: {other:?}"),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

const LIST: &str = "{{ members | alive | map(attribute=\"name\") | join(\",\") }}\n";

#[tokio::test]
async fn templates_that_share_a_reload_render_together_and_reload_once() {
    let dir = tempfile::tempdir().unwrap();
    let reloads = dir.path().join("reloads");
    let reload = format!("echo x >> {}", reloads.display());
    let handlers = ["a", "b"].map(|name| {
        template(dir.path(), name, LIST, |t| {
            t.reload = Some(reload.clone());
            t.scope = "plugin".into();
        })
    });
    let dispatcher = Dispatcher::new(LocalNode::default(), handlers.to_vec()).unwrap();
    // Nothing renders before the agent has published a member list.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!dir.path().join("a.txt").exists());

    dispatcher.set_members(members(&["n1"]));
    wait_until("the start renders", || {
        read(&dir.path().join("a.txt")) == "n1\n" && read(&dir.path().join("b.txt")) == "n1\n"
    })
    .await;
    wait_until("the start's reload", || read(&reloads).lines().count() == 1).await;

    dispatcher.set_members(members(&["n1", "n2"]));
    dispatcher.dispatch(join("n2"));
    wait_until("both files", || {
        read(&dir.path().join("a.txt")) == "n1,n2\n" && read(&dir.path().join("b.txt")) == "n1,n2\n"
    })
    .await;
    wait_until("both handlers ran", || {
        status_of(&dispatcher, "a").runs >= 2 && status_of(&dispatcher, "b").runs >= 2
    })
    .await;
    assert_eq!(
        read(&reloads).lines().count(),
        2,
        "one reload for the two files"
    );
    let (a, b) = (
        template_status(&dispatcher, "a"),
        template_status(&dispatcher, "b"),
    );
    assert_eq!((a.written, b.written), (2, 2));
    assert_eq!((a.reloads, b.reloads), (2, 2));

    // An event with no change of the members renders nothing.
    dispatcher.dispatch(join("n2"));
    wait_until("the runs", || status_of(&dispatcher, "a").runs >= 3).await;
    assert_eq!(template_status(&dispatcher, "a").renders, 2);
    assert_eq!(read(&reloads).lines().count(), 2);
}

#[tokio::test]
async fn a_burst_within_the_quiet_time_is_one_render() {
    let dir = tempfile::tempdir().unwrap();
    let handler = template(dir.path(), "lb", LIST, |t| {
        t.wait = Some(Wait::new(Duration::from_millis(200), Duration::from_secs(5)).unwrap());
    });
    let dispatcher = Dispatcher::new(LocalNode::default(), vec![handler]).unwrap();
    dispatcher.set_members(members(&["n0"]));
    wait_until("the start render", || {
        read(&dir.path().join("lb.txt")) == "n0\n"
    })
    .await;

    let mut names = vec!["n0".to_string()];
    for i in 1..=10 {
        names.push(format!("n{i}"));
        let list: Vec<&str> = names.iter().map(String::as_str).collect();
        dispatcher.set_members(members(&list));
        dispatcher.dispatch(join(&format!("n{i}")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = "n0,n1,n2,n3,n4,n5,n6,n7,n8,n9,n10\n";
    wait_until("the burst's render", || {
        read(&dir.path().join("lb.txt")) == want
    })
    .await;
    wait_runs(&dispatcher, "lb", 11).await;
    let status = template_status(&dispatcher, "lb");
    assert_eq!(
        status.written, 2,
        "the start, then one for the burst: {status:?}"
    );
}

#[tokio::test]
async fn a_refused_check_keeps_the_live_file() {
    let dir = tempfile::tempdir().unwrap();
    let handler = template(dir.path(), "cfg", LIST, |t| {
        t.check = Some("! grep -q bad {{candidate}}".into());
        t.perms = Some(0o640);
    });
    let dispatcher = Dispatcher::new(LocalNode::default(), vec![handler]).unwrap();
    dispatcher.set_members(members(&["good"]));
    let out = dir.path().join("cfg.txt");
    wait_until("the first file", || read(&out) == "good\n").await;
    dispatcher.set_members(members(&["bad"]));
    dispatcher.dispatch(join("bad"));
    wait_until("the refused check", || {
        template_status(&dispatcher, "cfg").check_failures == 1
    })
    .await;
    assert_eq!(read(&out), "good\n");
    let status = status_of(&dispatcher, "cfg");
    assert_eq!(status.failures, 1);
    let error = status.last.unwrap().error.unwrap();
    assert!(
        error.contains("refused the new") && error.contains("kept"),
        "{error}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "the template and its file"
    );
}
