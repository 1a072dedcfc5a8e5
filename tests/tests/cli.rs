//! The `rumor` command line as a user meets it: help, errors without an agent, config typos,
//! and output into a closed pipe.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use rumor_tests::process::wait_timeout;
use rumor_tests::{
    Agent, free_port, help_commands, rumor_bin, rumor_command, run_with_timeout, test_tempdir,
    write_file,
};

/// Every command `rumor --help` lists (a test checks the two lists agree).
const SUBCOMMANDS: &[&str] = &[
    "agent",
    "members",
    "join",
    "leave",
    "force-leave",
    "event",
    "query",
    "deploy",
    "reachability",
    "tags",
    "checks",
    "keys",
    "keygen",
    "info",
    "events",
    "reload",
    "monitor",
    "plugin",
    "template",
    "inventory",
    "version",
    "config",
    "completions",
    "man",
];

fn run(args: &[&str]) -> std::process::Output {
    run_with_timeout(rumor_command().args(args), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn binary_is_built() {
    assert!(rumor_bin().is_file(), "{}", rumor_bin().display());
}

#[test]
fn help_works_for_every_subcommand() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "rumor --help: {}", stderr_of(&out));
    let top = String::from_utf8_lossy(&out.stdout);
    let listed = help_commands(&top);
    assert_eq!(listed, SUBCOMMANDS, "a command is missing from this test");
    for sub in SUBCOMMANDS {
        assert!(
            top.contains(sub),
            "`rumor --help` does not list {sub}:\n{top}"
        );
        let out = run(&[sub, "--help"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "rumor {sub} --help failed: {}",
            stderr_of(&out)
        );
        assert!(
            text.contains("Usage") && text.contains(sub),
            "rumor {sub} --help:\n{text}"
        );
    }
}

#[test]
fn version_prints_the_version() {
    let out = run(&["version"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn members_without_an_agent_names_the_socket_in_one_line() {
    let tmp = test_tempdir();
    let sock = tmp.path().join("nobody-home").join("control.sock");
    let sock_str = sock.to_string_lossy().into_owned();

    let by_flag = run(&["members", "--control", &sock_str]);
    let by_env = run_with_timeout(
        rumor_command().arg("members").env("RUMOR_CONTROL", &sock),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (how, out) in [("--control", by_flag), ("RUMOR_CONTROL", by_env)] {
        assert!(
            !out.status.success(),
            "{how}: members succeeded without an agent"
        );
        assert_ne!(
            out.status.code(),
            Some(101),
            "{how}: panicked: {}",
            stderr_of(&out)
        );
        let err = stderr_of(&out);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{how}: want one line on stderr, got:\n{err}"
        );
        assert!(
            lines[0].contains(&sock_str),
            "{how}: does not name {sock_str}: {err}"
        );
    }
}

#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    let _slot = rumor_tests::cluster_slot();
    let agent = Agent::start("pipe-1", &["--tag", "role=pipe"]);
    let control = agent.control_path();
    for format in ["text", "json"] {
        // The read end is closed before rumor starts, so its first write fails with EPIPE,
        // as in `rumor members | head -0`, with no timing involved.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut child = rumor_command()
            .arg("members")
            .arg("--control")
            .arg(&control)
            .args(["--format", format])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rumor members");
        let status = wait_timeout(&mut child, Duration::from_secs(30));
        if status.is_none() {
            let _ = child.kill();
        }
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let status = status.expect("rumor members into a closed pipe hung");
        assert!(!err.contains("panicked"), "--format {format}: {err}");
        assert_ne!(status.code(), Some(101), "--format {format}: {err}");
    }
    // And the agent is unaffected.
    agent.cli_ok(&["members"]);
}

#[test]
fn unknown_config_key_fails_agent_start_with_file_and_line() {
    let tmp = test_tempdir();
    let config = tmp.path().join("rumor.toml");
    write_file(
        &config,
        "# a typo on line 3\nnode = \"typo-1\"\nbnd = \"127.0.0.1:7946\"\n",
    );
    let out = start_agent_expecting_failure(&tmp, &["--config", &config.to_string_lossy()]);
    let err = stderr_of(&out);
    let want = format!("{}:3", config.display());
    assert!(err.contains(&want), "stderr does not name {want}:\n{err}");
    assert!(err.contains("bnd"), "stderr does not name the key:\n{err}");
}

#[test]
fn missing_config_file_fails_agent_start_naming_it() {
    let tmp = test_tempdir();
    let config = tmp.path().join("absent.toml");
    let out = start_agent_expecting_failure(&tmp, &["--config", &config.to_string_lossy()]);
    let err = stderr_of(&out);
    assert!(
        err.contains(&*config.to_string_lossy()),
        "stderr does not name {}:\n{err}",
        config.display()
    );
}

#[test]
fn bad_tag_and_node_name_fail_agent_start_naming_the_value() {
    let tmp = test_tempdir();
    let out = start_agent_expecting_failure(&tmp, &["--tag", "novalue"]);
    assert!(stderr_of(&out).contains("novalue"), "{}", stderr_of(&out));
    let out = start_agent_expecting_failure(&tmp, &["--node", "bad name"]);
    assert!(stderr_of(&out).contains("bad name"), "{}", stderr_of(&out));
}

#[test]
fn a_join_address_that_does_not_answer_fails_agent_start() {
    let tmp = test_tempdir();
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = start_agent_expecting_failure(&tmp, &["--join", &nobody]);
    let err = stderr_of(&out);
    assert!(
        err.contains("could not join") && err.contains(&nobody),
        "{err}"
    );
}

#[test]
fn an_event_filter_typo_fails_agent_start_naming_the_value() {
    let tmp = test_tempdir();
    let out = start_agent_expecting_failure(&tmp, &["--event-handler", "member-jion=x"]);
    let err = stderr_of(&out);
    assert!(err.contains("member-jion"), "{err}");
    assert!(
        err.contains("member-join"),
        "lists the valid filters: {err}"
    );
}

/// Runs `rumor agent` with a private data dir and port plus `extra`; it must exit non-zero,
/// with one clear error and no panic.
fn start_agent_expecting_failure(tmp: &tempfile::TempDir, extra: &[&str]) -> std::process::Output {
    let data_dir = tmp.path().join("data");
    let bind = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "agent".to_owned(),
        "--data-dir".to_owned(),
        data_dir.to_string_lossy().into_owned(),
        "--bind".to_owned(),
        bind,
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = run_with_timeout(rumor_command().args(&args), Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("rumor agent should have refused to start: {e}"));
    assert!(
        !out.status.success(),
        "rumor {} started; stderr: {}",
        args.join(" "),
        stderr_of(&out)
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "panicked: {}",
        stderr_of(&out)
    );
    out
}
