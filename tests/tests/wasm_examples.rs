//! The handler authors' examples (examples/wasm-handler in Rust, examples/wasm-handler-c in C)
//! build with their documented commands and run in a real agent: each answers a query with
//! what it computed and records events in its granted directory.
//!
//! They need the wasm32-wasip1 Rust target and clang with Debian's wasi-libc; without them the
//! test is skipped (failed under `RUMOR_REQUIRE_ALL=1`). The rest of the WASM tests use WAT
//! fixtures and need neither.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rumor_tests::services::program_available;
use rumor_tests::{Agent, cluster_slot, skip_or_fail, test_tempdir, wait_for, write_file};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(15);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the Rust example for wasm32-wasip1 as its README says; `Err` says what is missing.
fn build_rust_example() -> Result<PathBuf, String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    if !String::from_utf8_lossy(&installed.stdout).contains("wasm32-wasip1") {
        return Err("the wasm32-wasip1 target is missing (rustup target add wasm32-wasip1)".into());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from)
        .join("wasm-example");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--manifest-path",
        ])
        .arg(workspace().join("examples/wasm-handler/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    assert!(status.success(), "the Rust example does not build");
    Ok(target_dir.join("wasm32-wasip1/release/rumor-wasm-handler-example.wasm"))
}

/// Builds the C example with clang and wasi-libc as its README says.
fn build_c_example(out: &Path) -> Result<PathBuf, String> {
    if !program_available("clang") || !Path::new("/usr/lib/wasm32-wasi/libc.a").exists() {
        return Err(
            "clang and wasi-libc are missing (apt-get install clang lld wasi-libc \
             libclang-rt-14-dev-wasm32)"
                .into(),
        );
    }
    let module = out.join("handler.wasm");
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wall", "-o"])
        .arg(&module)
        .arg(workspace().join("examples/wasm-handler-c/handler.c"))
        .status()
        .map_err(|e| format!("clang: {e}"))?;
    assert!(status.success(), "the C example does not build");
    Ok(module)
}

fn answer(agent: &Agent, query: &str, payload: &str) -> String {
    let out = agent.cli_ok(&[
        "query",
        query,
        payload,
        "--timeout",
        "10s",
        "--format",
        "json",
    ]);
    let result: Value = serde_json::from_str(&out).expect("query JSON");
    result["responses"][agent.name()]
        .as_str()
        .unwrap_or_else(|| panic!("no answer: {result}"))
        .to_string()
}

#[test]
fn the_rust_and_c_examples_build_answer_queries_and_record_events() {
    let dir = test_tempdir();
    let d = dir.path();
    let (rust, c) = match (build_rust_example(), build_c_example(d)) {
        (Ok(rust), Ok(c)) => (rust, c),
        (Err(why), _) | (_, Err(why)) => return skip_or_fail(&why),
    };
    let _slot = cluster_slot();
    let (rust_data, c_data) = (d.join("rust-data"), d.join("c-data"));
    std::fs::create_dir_all(&rust_data).unwrap();
    std::fs::create_dir_all(&c_data).unwrap();
    let config = d.join("rumor.toml");
    write_file(
        &config,
        &format!(
            r#"
[[handler]]
name = "rust"
events = ["user:note", "query:describe"]
wasm = "{rust}"
dirs = [{{ host = "{rust_data}", guest = "/data", writable = true }}]

[[handler]]
name = "c"
events = ["user:note", "query:describe-c"]
wasm = "{c}"
dirs = [{{ host = "{c_data}", guest = "/data", writable = true }}]
"#,
            rust = rust.display(),
            c = c.display(),
            rust_data = rust_data.display(),
            c_data = c_data.display()
        ),
    );
    let agent = Agent::start(
        "wasm-examples",
        &["--config", config.to_str().unwrap(), "--tag", "role=web"],
    );

    assert_eq!(
        answer(&agent, "describe", "hello wasm world"),
        "wasm-examples (role web): 3 words, reversed \"dlrow msaw olleh\"\n"
    );
    let c_answer = answer(&agent, "describe-c", "hi");
    assert!(
        c_answer.starts_with("wasm-examples answers describe-c: event of ")
            && c_answer.ends_with(", 0 members, schema v1\n"),
        "{c_answer:?}"
    );

    agent.cli_ok(&["event", "note", "hi"]);
    let rust_log = rust_data.join("events.log");
    wait_for(CONVERGE, "the Rust example's record of the event", || {
        let text = std::fs::read_to_string(&rust_log).map_err(|e| e.to_string())?;
        text.lines()
            .any(|l| l.starts_with("user note ltime=") && l.ends_with(" \"hi\""))
            .then_some(())
            .ok_or(text)
    });
    let c_log = c_data.join("events.jsonl");
    let recorded: Value = wait_for(CONVERGE, "the C example's record of the event", || {
        let text = std::fs::read_to_string(&c_log).map_err(|e| e.to_string())?;
        let last = text
            .lines()
            .rfind(|l| l.contains("\"kind\":\"user\""))
            .ok_or(text.clone())?;
        serde_json::from_str(last).map_err(|e| e.to_string())
    });
    assert_eq!(recorded["payload"]["text"], "hi");
    assert!(
        agent.log().contains("recorded a user event"),
        "the C example's stderr is logged"
    );
}
