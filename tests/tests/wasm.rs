//! WASM handlers end to end (docs/wasm.md): real agents run WAT modules (tests/fixtures/wasm)
//! from `[[handler]] wasm = ...` tables and from a plugin, and are driven with `rumor event`,
//! `rumor query`, `rumor info` and the metrics, as a user would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumor_tests::{Agent, cluster_slot, start_cluster, test_tempdir, wait_for, write_file};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(15);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/wasm")
        .join(format!("{name}.wat"))
}

/// Writes `text` as the config file `NAME.toml` in `dir` and returns its path as a string.
fn config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    write_file(&path, text);
    path.to_str().unwrap().to_string()
}

/// Handler `name` as `rumor info --format json` shows it.
fn handler(agent: &Agent, name: &str) -> Value {
    let info = agent.info().unwrap_or_else(|e| panic!("{e}"));
    info["handlers"]
        .as_array()
        .expect("handlers")
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no handler {name} in {info}"))
        .clone()
}

fn query(agent: &Agent, name: &str, payload: &str) -> Value {
    let out = agent.cli_ok(&[
        "query",
        name,
        payload,
        "--timeout",
        "10s",
        "--format",
        "json",
    ]);
    serde_json::from_str(&out).expect("query JSON")
}

fn metrics(agent: &Agent) -> String {
    rumor_tests::services::unix_http_get(&agent.control_path(), "/metrics")
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_user_event_runs_the_wasm_handler_of_three_nodes_which_record_it_in_their_grants() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path().to_path_buf();
    let names = ["wasm-ev-1", "wasm-ev-2", "wasm-ev-3"];
    let agents = start_cluster(&names, CONVERGE, |name| {
        let out = d.join(name);
        std::fs::create_dir_all(&out).unwrap();
        let file = config(
            &d,
            name,
            &format!(
                r#"
[[handler]]
name = "record"
events = ["user:deploy"]
wasm = "{module}"
dirs = [{{ host = "{out}", guest = "/out", writable = true }}]
"#,
                module = fixture("record").display(),
                out = out.display()
            ),
        );
        vec!["--config".into(), file, "--tag".into(), "role=web".into()]
    });

    agents[0].cli_ok(&["event", "deploy", "web v42"]);
    for agent in &agents {
        let recorded = d.join(agent.name()).join("event.json");
        let event: Value = wait_for(CONVERGE, "the event recorded in the grant", || {
            let text = std::fs::read_to_string(&recorded).map_err(|e| e.to_string())?;
            serde_json::from_str(&text).map_err(|e| format!("{e}: {text:?}"))
        });
        assert_eq!(event["version"], 1, "{event}");
        assert_eq!(event["kind"], "user", "{event}");
        assert_eq!(event["name"], "deploy", "{event}");
        assert!(event["ltime"].as_u64().is_some(), "{event}");
        assert_eq!(event["origin"], "wasm-ev-1", "{event}");
        assert_eq!(event["payload"]["text"], "web v42", "{event}");
        assert_eq!(event["payload"]["base64"], "d2ViIHY0Mg==", "{event}");
        assert_eq!(event["query_id"], Value::Null, "{event}");
        assert_eq!(event["members"], serde_json::json!([]), "{event}");
        assert_eq!(event["local"]["name"], agent.name(), "{event}");
        assert_eq!(event["local"]["tags"]["role"], "web", "{event}");
        let status = handler(agent, "record");
        assert_eq!(
            status["command"],
            format!("wasm {}", fixture("record").display())
        );
        assert_eq!(status["runtime"]["kind"], "wasm", "{status}");
        assert_eq!(status["runtime"]["compiles"], 1, "{status}");
    }
}

#[test]
fn a_wasm_query_handler_answers_from_three_nodes() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let file = config(
        dir.path(),
        "query",
        &format!(
            "[[handler]]\nname = \"whoami\"\nevents = [\"query:whoami\"]\nwasm = \"{}\"\n",
            fixture("echo").display()
        ),
    );
    let names = ["wasm-q-1", "wasm-q-2", "wasm-q-3"];
    let agents = start_cluster(&names, CONVERGE, |_| vec!["--config".into(), file.clone()]);
    let result = query(&agents[1], "whoami", "ping");
    for agent in &agents {
        let answer = result["responses"][agent.name()]
            .as_str()
            .unwrap_or_else(|| panic!("no answer from {}: {result}", agent.name()));
        let event: Value = serde_json::from_str(answer).expect("the echoed event");
        assert_eq!(event["kind"], "query");
        assert_eq!(event["name"], "whoami");
        assert_eq!(event["payload"]["text"], "ping");
        assert_eq!(event["local"]["name"], agent.name());
        assert_eq!(event["origin"], "wasm-q-2");
    }
}

#[test]
fn each_limit_stops_its_run_and_the_agent_keeps_serving() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let mut text = String::new();
    for name in ["spin", "grow", "flood", "sleep"] {
        let timeout = if name == "sleep" { "2s" } else { "30s" };
        text.push_str(&format!(
            "[[handler]]\nname = \"{name}\"\nevents = [\"user:{name}\"]\nwasm = \"{}\"\ntimeout = \"{timeout}\"\n",
            fixture(name).display()
        ));
        if name == "spin" {
            // The default budget is sized for a release build; this one runs out sooner in
            // any build.
            text.push_str("fuel = 2000000\n");
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "[[handler]]\nname = \"alive\"\nevents = [\"query:alive\"]\nwasm = \"{}\"\n",
        fixture("echo").display()
    ));
    let file = config(dir.path(), "limits", &text);
    let agent = Agent::start("wasm-limits", &["--config", &file]);

    let cases = [
        ("spin", "out of fuel", "fuel"),
        ("grow", "memory limit 16 MiB", "memory"),
        ("flood", "output over 64 KiB", "output"),
        ("sleep", "timed out after 2 s", "time"),
    ];
    for (round, (name, words, label)) in cases.into_iter().enumerate() {
        agent.cli_ok(&["event", name]);
        let last = wait_for(CONVERGE, &format!("the {name} run to end"), || {
            let h = handler(&agent, name);
            (h["runs"] == 1)
                .then(|| h["last"].clone())
                .ok_or(format!("{h}"))
        });
        assert_eq!(last["error"], words, "{last}");
        let h = handler(&agent, name);
        assert_eq!(h["failures"], 1, "{h}");
        assert!(agent.log().contains(words), "the log says {words:?}");
        let text_info = agent.cli_ok(&["info"]);
        assert!(
            text_info.contains(words),
            "rumor info says {words:?}:\n{text_info}"
        );
        let sample =
            format!("rumor_wasm_limit_stops_total{{handler=\"{name}\",limit=\"{label}\"}} 1");
        assert!(metrics(&agent).contains(&sample), "metrics hold {sample}");

        // The agent keeps serving, and the next event runs.
        let result = query(&agent, "alive", &format!("after {name}"));
        let answer = result["responses"]["wasm-limits"]
            .as_str()
            .unwrap_or_default();
        assert!(answer.contains(&format!("after {name}")), "{result}");
        assert_eq!(handler(&agent, "alive")["runs"], round as u64 + 1);
    }
}

#[test]
fn a_module_opening_files_outside_its_grants_gets_an_error_and_the_host_is_untouched() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path();
    let out = d.join("grants/out");
    let ro = d.join("grants/ro");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    write_file(&ro.join("settings.txt"), "read me\n");
    let file = config(
        d,
        "escape",
        &format!(
            r#"
[[handler]]
name = "escape"
events = ["query:escape"]
wasm = "{module}"
dirs = [
  {{ host = "{out}", guest = "/out", writable = true }},
  {{ host = "{ro}", guest = "/ro" }},
]
"#,
            module = fixture("escape").display(),
            out = out.display(),
            ro = ro.display()
        ),
    );
    let agent = Agent::start("wasm-escape", &["--config", &file]);
    let result = query(&agent, "escape", "");
    assert_eq!(
        result["responses"]["wasm-escape"], "denied\ndenied\nopened\n",
        "outside the grant and in the read-only grant: denied; inside: opened ({result})"
    );
    assert!(!d.join("grants/escaped.txt").exists());
    assert!(!ro.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(ro.join("settings.txt")).unwrap(),
        "read me\n"
    );
    assert!(out.join("inside.txt").exists());
}

#[test]
fn a_plugin_that_ships_a_wasm_handler_installs_and_runs() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let agent = Agent::start("wasm-plugin", &[]);
    let folder = dir.path().join("echoer");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(fixture("echo"), folder.join("echo.wat")).unwrap();
    let manifest = r#"name = "echoer"
version = "1.0.0"
description = "Answers the echo query with the event it got"

[[handler]]
name = "echo"
events = ["query:echo"]
wasm = "echo.wat"
fuel = 1000000
"#;
    let table = agent.cli_ok(&["plugin", "checksums", folder.to_str().unwrap()]);
    write_file(&folder.join("plugin.toml"), &format!("{manifest}\n{table}"));
    agent.cli_ok(&["plugin", "install", folder.to_str().unwrap()]);
    let answer = wait_for(CONVERGE, "the plugin's module to answer", || {
        let result = query(&agent, "echo", "from the plugin");
        result["responses"]["wasm-plugin"]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("{result}"))
    });
    let event: Value = serde_json::from_str(&answer).expect("the echoed event");
    assert_eq!(event["payload"]["text"], "from the plugin");
    let status = handler(&agent, "echoer/echo");
    assert_eq!(status["runtime"]["limits"]["fuel"], 1_000_000, "{status}");

    // A module changed after installation no longer matches the manifest's SHA-256: refused at
    // its next compile rather than run.
    let installed = agent.data_dir().join("plugins/echoer/echo.wat");
    std::fs::write(&installed, std::fs::read(fixture("ok")).unwrap()).unwrap();
    wait_for(CONVERGE, "the changed module refused", || {
        let _ = agent.try_cli(&["query", "echo", "again", "--timeout", "1s"]);
        let h = handler(&agent, "echoer/echo");
        h["last"]["error"]
            .as_str()
            .filter(|e| e.contains("not the") && e.contains("reinstall the plugin"))
            .map(drop)
            .ok_or(format!("{h}"))
    });
}
