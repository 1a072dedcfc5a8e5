//! The rough edges a new user met in their first hour (issue 20), each as that user meets it:
//! a second agent started from a shell that exports RUMOR_CONTROL, errors, logs, reload,
//! retry-join, monitor, flags and the docs that describe them.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::Duration;

use rumor_tests::{
    Agent, free_port, rumor_command, run_with_stdin, run_with_timeout, test_tempdir, wait_for,
    write_file,
};

const PROMPT: Duration = Duration::from_secs(15);

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `rumor agent` with its own data dir and port plus `extra`, expected to refuse to start.
fn agent_fails(extra: &[&str]) -> String {
    let tmp = test_tempdir();
    let data = tmp.path().join("data");
    let mut cmd = rumor_command();
    cmd.args(["agent", "--node", "x", "--data-dir"]).arg(&data);
    if !extra.contains(&"--bind") {
        cmd.args(["--bind", &format!("127.0.0.1:{}", free_port())]);
    }
    let out = run_with_timeout(cmd.args(extra), PROMPT).unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success(), "started: {}", stderr_of(&out));
    assert_ne!(
        out.status.code(),
        Some(101),
        "panicked: {}",
        stderr_of(&out)
    );
    stderr_of(&out)
}

/// `rumor ARGS --control <a's socket>` with `input` on its stdin, as a script pipes a payload
/// in (`-`); its stdout once it succeeded.
fn cli_with_stdin(a: &Agent, args: &[&str], input: &[u8]) -> String {
    let output = run_with_stdin(
        rumor_command()
            .args(args)
            .arg("--control")
            .arg(a.control_path()),
        input,
        PROMPT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rumor {args:?}: {out}{}",
        stderr_of(&output)
    );
    out
}

#[test]
fn an_agent_on_a_served_control_socket_fails_before_it_joins() {
    let a = Agent::start("a", &[]);
    let tmp = test_tempdir();
    // The README's walkthrough exported RUMOR_CONTROL for the client commands; the agent
    // reads the same variable.
    let out = run_with_timeout(
        rumor_command()
            .args(["agent", "--node", "b", "--profile", "local", "--data-dir"])
            .arg(tmp.path().join("b"))
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--join", &a.addr().to_string()])
            .env("RUMOR_CONTROL", a.control_path()),
        PROMPT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = stderr_of(&out);
    assert!(!out.status.success(), "b started: {err}");
    assert!(
        err.contains("another agent is already serving the control API"),
        "{err}"
    );
    assert!(err.contains("RUMOR_CONTROL"), "names the variable: {err}");
    let members = a.members().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        members.iter().all(|m| m.name != "b"),
        "b joined before it failed and is listed: {members:?}"
    );
}

#[test]
fn an_error_says_its_cause_once() {
    let tmp = test_tempdir();
    let config = tmp.path().join("rumor.toml");
    write_file(
        &config,
        "[[handler]]\nname = \"h\"\nevents = [\"user\"]\ncommand = \"true\"\ncoalesce = \"2x\"\n",
    );
    let err = agent_fails(&["--config", &config.to_string_lossy()]);
    assert_eq!(
        err.matches("invalid handler coalesce \"2x\"").count(),
        1,
        "{err}"
    );

    let a = Agent::start("taken", &[]);
    let err = agent_fails(&["--bind", &a.addr().to_string()]);
    assert!(err.contains("already in use"), "{err}");
    assert_eq!(err.matches("os error 98").count(), 1, "{err}");
}

/// The README's "Commands": "A failure is one `error: ...` line on stderr and exit code 1; a
/// usage error ... prints clap's usage message and exits 2."
#[test]
fn a_failed_command_is_one_error_line_and_exit_1_and_a_usage_error_exits_2() {
    let tmp = test_tempdir();
    let absent = tmp.path().join("no-agent.sock");
    let out = run_with_timeout(
        rumor_command().args(["members", "--control"]).arg(&absent),
        PROMPT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");

    let out = run_with_timeout(rumor_command().arg("memberz"), PROMPT).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("Usage:"), "{}", stderr_of(&out));
}

/// The README's handler contract: user events get the payload on stdin "with a newline added
/// when it has none, as Serf does" (and not a second one when it has).
#[test]
fn a_handler_gets_the_payload_with_one_final_newline() {
    let tmp = test_tempdir();
    let out = tmp.path().join("stdin");
    let handler = format!(
        "user=cat >> {}; echo '|' >> {}",
        out.display(),
        out.display()
    );
    let a = Agent::start("nl", &["--event-handler", &handler]);
    a.cli_ok(&["event", "one", "bare"]);
    a.cli_ok(&["event", "two", "ended\n"]);
    cli_with_stdin(&a, &["event", "three", "-"], b"piped");
    let seen = wait_for(PROMPT, "three handler runs", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (text.matches('|').count() == 3)
            .then_some(text.clone())
            .ok_or(text)
    });
    // `bare` and `piped` (read from stdin with `-`) end without a newline: one is added;
    // `ended\n` has one: none is.
    assert_eq!(seen, "bare\n|\nended\n|\npiped\n|\n");
}

#[test]
fn a_failed_handler_logs_its_exit_code_as_a_number() {
    let a = Agent::start("h", &["--log-json", "--event-handler", "user=exit 3"]);
    a.cli_ok(&["event", "go"]);
    let line = wait_for(PROMPT, "the handler failure in the log", || {
        a.log()
            .lines()
            .find(|l| l.contains("handler failed"))
            .map(str::to_owned)
            .ok_or_else(|| a.log_tail(5))
    });
    assert!(line.contains(r#""exit_code":3"#), "{line}");
    assert!(!line.contains("Some("), "{line}");
    assert!(!line.contains("\"signal\""), "no signal, no field: {line}");
}

#[test]
fn rumor_reload_names_the_settings_that_need_a_restart() {
    let tmp = test_tempdir();
    let config = tmp.path().join("rumor.toml");
    write_file(&config, "[tags]\nrole = \"web\"\n");
    let a = Agent::start("r", &["--config", &config.to_string_lossy()]);
    write_file(
        &config,
        "max_event_bytes = 512\ntombstone_timeout = \"1h\"\n[tags]\nrole = \"db\"\n",
    );
    let said = a.cli_ok(&["reload"]);
    assert!(
        said.contains("not applied, they need a restart: max_event_bytes, tombstone_timeout"),
        "{said}"
    );
}

#[test]
fn retry_join_failures_are_said_at_warn_with_the_address() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let a = Agent::start("lonely", &["--retry-join", &nobody]);
    let line = wait_for(PROMPT, "a retry-join failure in the log", || {
        a.log()
            .lines()
            .find(|l| l.contains("retry-join failed"))
            .map(str::to_owned)
            .ok_or_else(|| a.log_tail(5))
    });
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&nobody), "{line}");
}

#[test]
fn monitor_says_what_it_streams_before_anything_happens() {
    let a = Agent::start("idle", &[]);
    let mut child = rumor_command()
        .args(["monitor", "--control"])
        .arg(a.control_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rumor monitor starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(PROMPT);
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("monitor printed nothing on an idle agent");
    assert!(line.starts_with("Streaming logs at info"), "{line}");
    assert!(
        line.contains(&a.control_path().to_string_lossy().into_owned()),
        "{line}"
    );
}

#[test]
fn monitor_json_shows_text_payloads_as_text_and_binary_ones_as_base64() {
    let a = Agent::start("m", &[]);
    let monitor = a.monitor();
    // Sent until the stream is subscribed and shows one.
    let event = wait_for(PROMPT, "the user event in the monitor", || {
        a.cli_ok(&["event", "deploy", "web v42"]);
        std::thread::sleep(Duration::from_millis(100));
        monitor
            .first(|v| v["event"]["type"] == "user")
            .map(|(_, v)| v)
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(event["event"]["payload"], "web v42", "{event}");

    // Two bytes that are not UTF-8, sent from stdin the way a script would.
    cli_with_stdin(&a, &["event", "blob", "-"], &[0xff, 0]);
    let (_, blob) = wait_for(PROMPT, "the binary event in the monitor", || {
        monitor
            .first(|v| v["event"]["name"] == "blob")
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(
        blob["event"]["payload"],
        serde_json::json!({"base64": "/wA="}),
        "{blob}"
    );
}

#[test]
fn event_handler_help_says_how_to_set_name_timeout_and_coalescing() {
    let out = run_with_timeout(rumor_command().args(["agent", "--help"]), PROMPT)
        .unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&out.stdout);
    let start = help.find("--event-handler").expect("the flag is listed");
    let text = &help[start..start + 900.min(help.len() - start)];
    for word in ["name", "timeout", "coalesc", "[[handler]]"] {
        assert!(
            text.contains(word),
            "--event-handler help lacks {word:?}:\n{text}"
        );
    }
}

#[test]
fn a_comma_in_a_tag_flag_stays_in_the_value() {
    let err = agent_fails(&["--tag", "k=v,with,commas"]);
    assert!(err.contains("\"v,with,commas\""), "{err}");
    assert!(
        !err.contains("invalid tag \"with\""),
        "split at the comma: {err}"
    );
}

#[test]
fn query_reads_its_payload_from_stdin() {
    let a = Agent::start("q", &["--event-handler", "query:echo=cat"]);
    let out = cli_with_stdin(&a, &["query", "echo", "-"], b"hello from stdin");
    assert!(out.contains("hello from stdin"), "{out}");
}

#[test]
fn the_control_api_doc_lists_every_metric() {
    let port = free_port();
    let a = Agent::start("metrics", &["--metrics", &format!("127.0.0.1:{port}")]);
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics listen");
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    drop(a);
    let doc = include_str!("../../docs/control-api.md");
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() > 10, "{body}");
    for name in names {
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/control-api.md misses {name}"
        );
    }
}

#[test]
fn the_readme_walkthrough_leaves_the_agents_endpoint_alone() {
    // Exported in the shell that starts the agents, RUMOR_CONTROL moves them all onto one
    // socket (see an_agent_on_a_served_control_socket_fails_before_it_joins).
    let readme = include_str!("../../README.md");
    assert!(
        !readme.contains("export RUMOR_CONTROL"),
        "README exports RUMOR_CONTROL"
    );
    // The example config said SIGHUP applies tags and log level only; handlers and plugins
    // reload too, and the answer names what needs a restart.
    let example = include_str!("../../examples/rumor.toml");
    let sighup: String = example
        .lines()
        .skip_while(|l| !l.contains("SIGHUP"))
        .take_while(|l| l.starts_with('#'))
        .collect();
    for said in ["tags", "log_level", "[[handler]]", "plugin", "restart"] {
        assert!(
            sighup.contains(said),
            "examples/rumor.toml on SIGHUP lacks {said:?}: {sighup}"
        );
    }
}
