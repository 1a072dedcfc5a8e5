//! Plugins end to end, driven through `rumor plugin` as a user would: install from a folder
//! and from a .tar.gz, refusals (bad settings, tampered files, missing or wrong signatures),
//! settings changes, removal, a broken plugin that keeps its last good version, the built-in
//! hosts plugin on real files, and the hot reload of the config file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rumor_tests::{Agent, cluster_slot, test_tempdir, wait_for, write_file};
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(15);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_content(path: &Path, want: &str, what: &str) {
    wait_for(CONVERGE, what, || {
        let got = read(path);
        (got == want)
            .then_some(())
            .ok_or(format!("{}: {got:?}", path.display()))
    });
}

/// A plugin folder `greeter` whose template writes a greeting and the alive members to the
/// `out` setting's file; its `[files]` table made with `rumor plugin checksums`.
fn greeter(dir: &Path, agent: &Agent) -> PathBuf {
    let folder = dir.join("greeter");
    std::fs::create_dir_all(folder.join("templates")).unwrap();
    write_file(
        &folder.join("templates/greeting.j2"),
        "{{ settings.greeting }} {{ members | alive | map(attribute=\"name\") | join(\",\") }}\n",
    );
    let manifest = r#"name = "greeter"
version = "1.0.0"
description = "Greets the alive members"

[settings.out]
type = "path"
required = true
help = "Where the greeting goes"

[settings.greeting]
type = "string"
default = "hello"

[settings.times]
type = "integer"
default = 1

[[handler]]
name = "greet"
template = "templates/greeting.j2"
destination = "{{ settings.out }}"
"#;
    let table = agent.cli_ok(&["plugin", "checksums", folder.to_str().unwrap()]);
    assert!(
        table.starts_with("[files]\n\"templates/greeting.j2\" = \""),
        "{table}"
    );
    write_file(&folder.join("plugin.toml"), &format!("{manifest}\n{table}"));
    folder
}

fn refused(agent: &Agent, args: &[&str]) -> String {
    agent.try_cli(args).expect_err("refused")
}

fn plugin_names(agent: &Agent) -> Vec<String> {
    let info = agent.info().unwrap_or_else(|e| panic!("{e}"));
    info["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn handler_names(agent: &Agent) -> Vec<String> {
    let info = agent.info().unwrap_or_else(|e| panic!("{e}"));
    info["handlers"]
        .as_array()
        .expect("handlers")
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect()
}

/// `GET /metrics` on the agent's control socket.
fn metrics(agent: &Agent) -> String {
    rumor_tests::services::unix_http_get(&agent.control_path(), "/metrics")
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_plugin_installs_from_a_folder_or_an_archive_and_refuses_what_is_wrong() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let d = dir.path();
    let agent = Agent::start("plg-a", &[]);
    let folder = greeter(d, &agent);
    let out = d.join("greeting.txt");
    let src = folder.to_str().unwrap();
    let out_set = format!("out={}", out.display());

    // Bad settings: refused, naming the setting, and nothing installed.
    let err = refused(&agent, &["plugin", "install", src]);
    assert!(err.contains("setting \"out\": is required"), "{err}");
    let err = refused(
        &agent,
        &[
            "plugin",
            "install",
            src,
            "--set",
            &out_set,
            "--set",
            "times=often",
        ],
    );
    assert!(
        err.contains("setting \"times\": \"often\" is not an integer"),
        "{err}"
    );
    let err = refused(
        &agent,
        &[
            "plugin",
            "install",
            src,
            "--set",
            &out_set,
            "--set",
            "colour=red",
        ],
    );
    assert!(
        err.contains("setting \"colour\": the plugin has no such setting"),
        "{err}"
    );
    let err = refused(
        &agent,
        &["plugin", "install", src, "--set", "out=relative/file"],
    );
    assert!(err.contains("not an absolute path"), "{err}");
    assert!(plugin_names(&agent).is_empty());

    // From the folder: installed, its handler runs at once.
    let said = agent.cli_ok(&["plugin", "install", src, "--set", &out_set]);
    assert_eq!(said, "Installed greeter 1.0.0: handlers greeter/greet\n");
    wait_content(&out, "hello plg-a\n", "the greeting");
    assert_eq!(plugin_names(&agent), ["greeter"]);

    // A tampered file: refused, and the installed version keeps running.
    write_file(&folder.join("templates/greeting.j2"), "tampered\n");
    let err = refused(&agent, &["plugin", "install", src]);
    assert!(
        err.contains("checksum mismatch: templates/greeting.j2 has SHA-256"),
        "{err}"
    );
    write_file(
        &folder.join("templates/greeting.j2"),
        "{{ settings.greeting }} {{ members | alive | map(attribute=\"name\") | join(\",\") }}\n",
    );
    let extra = folder.join("unlisted.sh");
    write_file(&extra, "true\n");
    let err = refused(&agent, &["plugin", "install", src]);
    assert!(err.contains("unlisted.sh is not listed"), "{err}");
    std::fs::remove_file(&extra).unwrap();

    // From a .tar.gz (an upgrade: the settings given before are kept).
    let archive = d.join("greeter.tar.gz");
    let tar = Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(d)
        .arg("greeter")
        .status()
        .unwrap();
    assert!(tar.success());
    let said = agent.cli_ok(&[
        "plugin",
        "install",
        archive.to_str().unwrap(),
        "--set",
        "greeting=hi",
    ]);
    assert!(said.starts_with("Installed greeter 1.0.0"), "{said}");
    wait_content(&out, "hi plg-a\n", "the greeting of the upgrade");

    // `plugin set` checks, then applies.
    let err = refused(&agent, &["plugin", "set", "greeter", "times=x"]);
    assert!(err.contains("setting \"times\""), "{err}");
    agent.cli_ok(&["plugin", "set", "greeter", "greeting=bonjour"]);
    wait_content(&out, "bonjour plg-a\n", "the new greeting");

    // `plugin info`: settings with their values, its handler and how it ran.
    let info: Value =
        serde_json::from_str(&agent.cli_ok(&["plugin", "info", "greeter", "--format", "json"]))
            .unwrap();
    let greeting = info["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "greeting")
        .unwrap();
    assert_eq!(greeting["value"], "bonjour");
    assert_eq!(greeting["given"], true);
    assert_eq!(info["handlers"][0]["name"], "greeter/greet");
    assert!(info["handlers"][0]["runs"].as_u64().unwrap() >= 1, "{info}");
    let text = agent.cli_ok(&["plugin", "info", "greeter"]);
    assert!(
        text.contains("greeting") && text.contains("greeter/greet"),
        "{text}"
    );

    // Edited where it is installed: broken, reported, and the last good version keeps running.
    let installed = agent
        .data_dir()
        .join("plugins/greeter/templates/greeting.j2");
    write_file(&installed, "edited by hand\n");
    wait_for(CONVERGE, "the broken plugin to be reported", || {
        let info = agent.info()?;
        let error = info["plugins"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (error.contains("checksum mismatch"))
            .then_some(())
            .ok_or(info["plugins"].to_string())
    });
    let info = agent.info().unwrap();
    assert!(info["reload"]["failures"].as_u64().unwrap() >= 1, "{info}");
    assert!(handler_names(&agent).contains(&"greeter/greet".to_string()));
    let list = agent.cli_ok(&["plugin", "list"]);
    assert!(list.contains("broken: checksum mismatch"), "{list}");
    let text = metrics(&agent);
    assert!(text.contains("rumor_plugins{state=\"broken\"} 1"), "{text}");
    assert!(
        text.contains("rumor_template_renders_total{handler=\"greeter/greet\"}"),
        "{text}"
    );

    // Removed: its handler stops.
    agent.cli_ok(&["plugin", "remove", "greeter"]);
    assert!(plugin_names(&agent).is_empty());
    assert!(!handler_names(&agent).contains(&"greeter/greet".to_string()));
    let err = refused(&agent, &["plugin", "remove", "greeter"]);
    assert!(err.contains("not installed"), "{err}");
    let other = Agent::start("plg-b", &["--join", &agent.addr().to_string()]);
    wait_for(CONVERGE, "plg-b to join", || {
        let n = agent.members()?.len();
        (n == 2).then_some(()).ok_or(format!("{n} members"))
    });
    assert_eq!(
        read(&out),
        "bonjour plg-a\n",
        "a removed plugin writes nothing more"
    );
    drop(other);
}

#[test]
fn with_trusted_keys_only_signed_plugins_install() {
    let dir = test_tempdir();
    let d = dir.path();
    let key = d.join("signing.key");
    let other_key = d.join("other.key");
    let plain = rumor_tests::rumor_command()
        .args(["plugin", "keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(plain.status.success());
    let public = String::from_utf8(plain.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let again = rumor_tests::rumor_command()
        .args(["plugin", "keygen", "--out", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key file is not overwritten"
    );
    rumor_tests::rumor_command()
        .args(["plugin", "keygen", "--out", other_key.to_str().unwrap()])
        .output()
        .unwrap();

    let agent = Agent::start("sig-a", &["--plugin-trusted-keys", &public]);
    let folder = greeter(d, &agent);
    let src = folder.to_str().unwrap();
    let out_set = format!("out={}", d.join("g.txt").display());

    let err = refused(&agent, &["plugin", "install", src, "--set", &out_set]);
    assert!(
        err.contains("signature refused: the plugin is not signed"),
        "{err}"
    );

    let sign = |key: &Path| {
        rumor_tests::rumor_command()
            .args(["plugin", "sign", src, "--key", key.to_str().unwrap()])
            .output()
            .unwrap()
    };
    assert!(sign(&other_key).status.success());
    let err = refused(&agent, &["plugin", "install", src, "--set", &out_set]);
    assert!(err.contains("not a valid signature"), "{err}");

    let signed = sign(&key);
    assert!(signed.status.success());
    assert!(String::from_utf8_lossy(&signed.stdout).contains(&public));
    agent.cli_ok(&["plugin", "install", src, "--set", &out_set]);
    wait_content(
        &d.join("g.txt"),
        "hello sig-a\n",
        "the signed plugin's greeting",
    );

    // The built-in plugins are not signed by this key either.
    let err = refused(&agent, &["plugin", "install", "hosts"]);
    assert!(err.contains("not signed"), "{err}");
}

#[test]
fn the_hosts_plugin_keeps_its_block_and_every_other_byte() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let hosts = dir.path().join("hosts");
    let before = "127.0.0.1\tlocalhost\n# a comment the user wrote\n";
    let after = "::1 ip6-localhost  # kept as is, no final newline";
    write_file(
        &hosts,
        &format!("{before}# BEGIN rumor\n10.9.9.9 stale\n# END rumor\n{after}"),
    );
    let a = Agent::start("hst-a", &[]);
    let set_path = format!("path={}", hosts.display());
    a.cli_ok(&[
        "plugin",
        "install",
        "hosts",
        "--set",
        &set_path,
        "--set",
        "domain=lan",
    ]);
    wait_content(
        &hosts,
        &format!("{before}# BEGIN rumor\n127.0.0.1 hst-a hst-a.lan\n# END rumor\n{after}"),
        "the block with the one member",
    );
    let mut b = Agent::start("hst-b", &["--join", &a.addr().to_string()]);
    wait_content(
        &hosts,
        &format!(
            "{before}# BEGIN rumor\n127.0.0.1 hst-a hst-a.lan\n127.0.0.1 hst-b hst-b.lan\n# END rumor\n{after}"
        ),
        "the block with both members",
    );
    b.cli_ok(&["leave"]);
    b.wait_exit(CONVERGE);
    wait_content(
        &hosts,
        &format!("{before}# BEGIN rumor\n127.0.0.1 hst-a hst-a.lan\n# END rumor\n{after}"),
        "the member that left to be dropped",
    );

    // A file that does not exist is created with the block alone.
    let fresh = dir.path().join("new/hosts");
    a.cli_ok(&[
        "plugin",
        "set",
        "hosts",
        &format!("path={}", fresh.display()),
        "domain=",
    ]);
    wait_content(
        &fresh,
        "# BEGIN rumor\n127.0.0.1 hst-a\n# END rumor\n",
        "a new hosts file",
    );
}

#[test]
fn an_edited_config_applies_within_about_a_second_and_a_broken_one_keeps_the_last_good() {
    let dir = test_tempdir();
    let config = dir.path().join("rumor.toml");
    let marker = dir.path().join("ran");
    write_file(&config, "log_level = \"debug\"\n");
    let agent = Agent::start("cfg-a", &["--config", config.to_str().unwrap()]);
    assert!(handler_names(&agent).is_empty());

    write_file(
        &config,
        &format!(
            "[[handler]]\nname = \"touch\"\nevents = [\"user:touch\"]\ncommand = \"touch {}\"\n",
            marker.display()
        ),
    );
    wait_for(CONVERGE, "the new handler", || {
        let names = handler_names(&agent);
        (names == ["touch"])
            .then_some(())
            .ok_or(format!("{names:?}"))
    });

    write_file(&config, "[[handler]]\nname = \"touch\"\ncomand = \"x\"\n");
    wait_for(CONVERGE, "the broken config to be reported", || {
        let info = agent.info()?;
        let errors = info["reload"]["errors"].to_string();
        errors
            .contains("comand")
            .then_some(())
            .ok_or(info["reload"].to_string())
    });
    assert_eq!(
        handler_names(&agent),
        ["touch"],
        "the last good handlers keep running"
    );
    agent.cli_ok(&["event", "touch"]);
    wait_for(CONVERGE, "the kept handler to run", || {
        marker.exists().then_some(()).ok_or("not yet".into())
    });
}
