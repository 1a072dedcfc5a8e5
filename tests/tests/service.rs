//! rumor as an installed service: the shell completions and man pages cover every command,
//! the systemd unit verifies, and the agent speaks systemd's notify protocol (ready, watchdog,
//! stopping) over a real `$NOTIFY_SOCKET`. The package's install/upgrade/remove cycle runs in
//! `.ci/run` (`packaging/test-deb`): it needs root and changes the machine.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rumor_tests::{
    free_port, help_commands, rumor_command, run_with_timeout, skip_or_fail, test_tempdir,
};

const PROMPT: Duration = Duration::from_secs(15);

fn rumor(args: &[&str]) -> String {
    let out =
        run_with_timeout(rumor_command().args(args), PROMPT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "rumor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Whether `program` is on the PATH.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// The commands `rumor [PARENT] --help` lists (without `help`).
fn commands(parent: &[&str]) -> Vec<String> {
    let mut args = parent.to_vec();
    args.push("--help");
    help_commands(&rumor(&args))
}

#[test]
fn completions_cover_every_command_and_load_in_their_shells() {
    let all = commands(&[]);
    assert!(all.len() >= 20, "{all:?}");
    for shell in ["bash", "zsh", "fish"] {
        let script = rumor(&["completions", shell]);
        for command in &all {
            assert!(
                script.contains(command.as_str()),
                "{shell} completion lacks {command}"
            );
        }
        for nested in commands(&["plugin"]) {
            assert!(
                script.contains(nested.as_str()),
                "{shell} completion lacks plugin {nested}"
            );
        }
    }
    // Each script loaded into its own shell, asked what it registered for `rumor`.
    let dir = test_tempdir();
    let loads = [
        ("bash", "source {} && complete -p rumor", "rumor"),
        (
            "zsh",
            "autoload -U compinit && compinit -u && source {} && print -- ${_comps[rumor]}",
            "_rumor",
        ),
        ("fish", "source {}; complete -C'rumor mem'", "members"),
    ];
    for (shell, load, expected) in loads {
        if !installed(shell) {
            skip_or_fail(&format!(
                "the {shell} completion is not loaded: {shell} is not installed (apt install {shell})"
            ));
            continue;
        }
        let file = dir.path().join(format!("rumor.{shell}"));
        std::fs::write(&file, rumor(&["completions", shell])).unwrap();
        let out = run_with_timeout(
            std::process::Command::new(shell)
                .arg("-c")
                .arg(load.replace("{}", &file.to_string_lossy()))
                .env("HOME", dir.path()),
            PROMPT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expected),
            "{shell} did not register the completion: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run_with_timeout(rumor_command().args(["completions", "tcsh"]), PROMPT).unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_cover_every_command_and_match_help() {
    let dir = test_tempdir();
    let said = rumor(&["man", &dir.path().to_string_lossy()]);
    assert!(said.contains("man pages written"), "{said}");
    let page = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}.1")))
            .unwrap_or_else(|e| panic!("no man page {name}.1: {e}"))
    };
    assert!(page("rumor").starts_with(".ie"), "roff");
    for command in commands(&[]) {
        let text = page(&format!("rumor-{command}"));
        assert!(text.contains(".TH"), "rumor-{command}.1 is not a man page");
    }
    for nested in commands(&["plugin"]) {
        page(&format!("rumor-plugin-{nested}"));
    }
    // From the same definitions as --help: a flag's help text is in the page.
    let members = page("rumor-members");
    assert!(members.contains("detailed"), "{members}");
    assert!(rumor(&["members", "--help"]).contains("--detailed"));
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/debian/rumor.service");
    let text = std::fs::read_to_string(&unit).expect("the unit file");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "WatchdogSec=",
    ] {
        assert!(text.contains(line), "the unit lacks {line}");
    }
    if run_with_timeout(
        std::process::Command::new("systemd-analyze").arg("--version"),
        PROMPT,
    )
    .is_err()
    {
        skip_or_fail("systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    // Verified as installed, with ExecStart pointing at the binary under test.
    let dir = test_tempdir();
    let copy = dir.path().join("rumor.service");
    let bin = rumor_tests::rumor_bin().to_string_lossy().into_owned();
    std::fs::write(&copy, text.replace("/usr/bin/rumor", &bin)).unwrap();
    let out = run_with_timeout(
        std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy),
        PROMPT,
    )
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    // Documentation=man:rumor-agent(1) is found once the package installed the page.
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| !l.contains("Command 'man ") && !l.trim().is_empty())
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {said}");
}

/// An agent started as systemd starts it, with `$NOTIFY_SOCKET` (and a watchdog) set.
struct Notified {
    child: Child,
    socket: UnixDatagram,
    control: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Notified {
    fn start(watchdog_usec: u64) -> Notified {
        let dir = test_tempdir();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(PROMPT)).unwrap();
        let data = dir.path().join("data");
        let child = rumor_command()
            .args(["agent", "--node", "n", "--profile", "local", "--bind"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(&data)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", watchdog_usec.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the agent starts");
        Notified {
            child,
            socket,
            control: data.join("control.sock"),
            _dir: dir,
        }
    }

    fn next(&self) -> String {
        let mut buf = [0u8; 512];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agent_says_ready_when_it_serves_feeds_the_watchdog_and_says_stopping() {
    let agent = Notified::start(1_000_000);
    let ready = agent.next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains("STATUS=serving the control API on"),
        "{ready}"
    );
    // Ready means the control API answers now.
    let members = rumor(&["members", "--control", &agent.control.to_string_lossy()]);
    assert!(members.starts_with("n "), "{members}");
    // Pings at half the interval, each one through the gossip loop.
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(agent.next(), "WATCHDOG=1");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // SAFETY: kill(2) only sends a signal, to our own child.
    assert_eq!(
        unsafe { libc::kill(agent.child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let stopping = loop {
        let said = agent.next();
        if said != "WATCHDOG=1" {
            break said;
        }
    };
    assert_eq!(stopping, "STOPPING=1");
}
