//! The runtime on its own: the contract, each limit, the grants. The WAT modules are the
//! end-to-end tests' fixtures (tests/fixtures/wasm).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::contract::LocalNode;
use crate::event::{Event, UserEvent};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/wasm")
        .join(format!("{name}.wat"))
}

fn event() -> Event {
    Event::User(UserEvent {
        ltime: 5,
        name: "deploy".into(),
        payload: b"web v42".to_vec(),
        coalesce: false,
        origin: "ops".into(),
    })
}

async fn run_with(config: WasmConfig, timeout: Duration) -> (RunResult, Wasm) {
    config.validate().unwrap();
    let wasm = Wasm::new(&config);
    let local = LocalNode {
        name: "web-1".into(),
        tags: Default::default(),
    };
    let env = BTreeMap::new();
    let event = event();
    let run = Run {
        handler: "h",
        event: &event,
        local: &local,
        env: &env,
        timeout,
    };
    let result = Runtime::run(&wasm, &run).await;
    (result, wasm)
}

async fn run(name: &str) -> RunResult {
    run_with(WasmConfig::new(fixture(name)), Duration::from_secs(10))
        .await
        .0
}

fn status(wasm: &Wasm) -> WasmStatus {
    match wasm.details() {
        Some(RuntimeDetails::Wasm(status)) => status,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_event_arrives_as_json_and_stdout_is_the_answer() {
    let result = run("echo").await;
    assert!(result.success(), "{result:?}");
    let value: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(value["version"], SCHEMA_VERSION);
    assert_eq!(value["name"], "deploy");
    assert_eq!(value["payload"]["text"], "web v42");
    assert_eq!(value["local"]["name"], "web-1");
}

#[tokio::test]
async fn the_exit_code_is_the_result_and_stderr_is_kept() {
    let result = run("exit3").await;
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(result.stderr, b"no such deploy\n");
    assert_eq!(result.to_string(), "exited with code 3");
}

#[tokio::test]
async fn each_limit_stops_the_run_and_says_so() {
    let mut spin = WasmConfig::new(fixture("spin"));
    spin.limits.fuel = 2_000_000;
    let (result, wasm) = run_with(spin, Duration::from_secs(60)).await;
    assert_eq!(result.error.as_deref(), Some("out of fuel"), "{result:?}");
    assert!(result.started && !result.success());
    assert_eq!(status(&wasm).out_of_fuel, 1);

    let (result, wasm) = run_with(WasmConfig::new(fixture("grow")), Duration::from_secs(10)).await;
    assert_eq!(
        result.error.as_deref(),
        Some("memory limit 16 MiB"),
        "{result:?}"
    );
    assert_eq!(status(&wasm).memory_limit, 1);

    let (result, wasm) = run_with(WasmConfig::new(fixture("flood")), Duration::from_secs(10)).await;
    assert_eq!(
        result.error.as_deref(),
        Some("output over 64 KiB"),
        "{result:?}"
    );
    assert_eq!(result.stdout.len(), 64 * 1024);
    assert_eq!(status(&wasm).output_limit, 1);

    let (result, wasm) = run_with(WasmConfig::new(fixture("sleep")), Duration::from_secs(1)).await;
    assert_eq!(
        result.error.as_deref(),
        Some("timed out after 1 s"),
        "{result:?}"
    );
    assert!(result.timed_out);
    assert!(result.duration < Duration::from_secs(3), "{result:?}");
    assert_eq!(status(&wasm).timed_out, 1);
}

#[tokio::test]
async fn a_compute_loop_with_a_large_budget_still_stops_at_its_timeout() {
    let mut config = WasmConfig::new(fixture("spin"));
    config.limits.fuel = u64::MAX;
    let (result, _) = run_with(config, Duration::from_millis(300)).await;
    assert_eq!(
        result.error.as_deref(),
        Some("timed out after 300 ms"),
        "{result:?}"
    );
    assert!(result.duration < Duration::from_secs(2), "{result:?}");
}

#[tokio::test]
async fn grants_hold_the_module_inside() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let ro = root.path().join("ro");
    std::fs::create_dir(&out).unwrap();
    std::fs::create_dir(&ro).unwrap();
    let mut config = WasmConfig::new(fixture("escape"));
    config.grants.dirs = vec![
        DirGrant {
            host: out.clone(),
            guest: "/out".into(),
            writable: true,
        },
        DirGrant {
            host: ro.clone(),
            guest: "/ro".into(),
            writable: false,
        },
    ];
    let (result, _) = run_with(config, Duration::from_secs(10)).await;
    assert!(result.success(), "{result:?}");
    assert_eq!(result.stdout, b"denied\ndenied\nopened\n");
    assert!(!root.path().join("escaped.txt").exists());
    assert!(!ro.join("new.txt").exists());
    assert!(out.join("inside.txt").exists());
}

#[test]
fn bad_settings_are_refused_with_what_to_change() {
    let mut config = WasmConfig::new(fixture("echo"));
    config.limits.output = 1 << 20;
    assert!(config.validate().unwrap_err().contains("at most 64 KiB"));
    let mut config = WasmConfig::new(fixture("echo"));
    config.grants.dirs = vec![DirGrant {
        host: "/nonexistent-grant".into(),
        guest: "/data".into(),
        writable: false,
    }];
    assert!(config.validate().unwrap_err().contains("not a directory"));
    let err = WasmConfig::new("/nonexistent.wasm").validate().unwrap_err();
    assert!(
        err.contains("cannot read module /nonexistent.wasm"),
        "{err}"
    );
}
