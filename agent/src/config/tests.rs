//! Unit tests of the configuration merge, parsing and validation.

use super::*;
use clap::Parser;
use std::sync::Mutex;

/// Serializes the tests that read or write the process environment through clap.
static ENV_LOCK: Mutex<()> = Mutex::new(());

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    agent: AgentArgs,
}

/// Every variable AgentArgs reads; cleared around env tests so the developer's shell
/// cannot leak into them.
const VARS: &[&str] = &[
    "RUMOR_CONFIG",
    "RUMOR_NODE",
    "RUMOR_BIND",
    "RUMOR_ADVERTISE",
    "RUMOR_JOIN",
    "RUMOR_RETRY_JOIN",
    "RUMOR_TAGS",
    "RUMOR_DATA_DIR",
    "RUMOR_CONTROL",
    "RUMOR_PROFILE",
    "RUMOR_LOG_LEVEL",
    "RUMOR_LOG_JSON",
    "RUMOR_DEV",
    "RUMOR_MAX_EVENT_BYTES",
    "RUMOR_RECONNECT_TIMEOUT",
    "RUMOR_TOMBSTONE_TIMEOUT",
    "RUMOR_PRIORITY_BOOST",
    "RUMOR_REALTIME_PRIORITY",
];

/// Parses `argv` with exactly the RUMOR_* variables in `env` set.
fn parse_with_env(argv: &[&str], env: &[(&str, &str)]) -> AgentArgs {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: every test that touches RUMOR_* variables holds ENV_LOCK, and nothing else in
    // this test binary reads them.
    unsafe {
        for v in VARS {
            std::env::remove_var(v);
        }
        for (k, v) in env {
            std::env::set_var(k, v);
        }
    }
    let parsed = Cli::try_parse_from(std::iter::once("rumor").chain(argv.iter().copied()));
    unsafe {
        for (k, _) in env {
            std::env::remove_var(k);
        }
    }
    parsed.expect("arguments parse").agent
}

fn host() -> HostDefaults {
    HostDefaults {
        hostname: Ok("testhost".into()),
        data_dir: PathBuf::from("/tmp/rumor-default"),
    }
}

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("/etc/rumor/rumor.toml"), text.to_owned()).expect("valid file")
}

#[test]
fn clap_definition_is_valid() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn example_configs_are_valid() {
    for (name, text) in [
        (
            "examples/rumor.toml",
            include_str!("../../../examples/rumor.toml"),
        ),
        (
            "examples/dev.toml",
            include_str!("../../../examples/dev.toml"),
        ),
    ] {
        let f =
            ConfigFile::parse(Path::new(name), text.to_owned()).unwrap_or_else(|e| panic!("{e}"));
        AgentArgs::default()
            .resolve_with(Some(&f), &host())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn defaults() {
    let c = AgentArgs::default().resolve_with(None, &host()).unwrap();
    assert_eq!(c.node, "testhost");
    assert_eq!(c.bind, "0.0.0.0:7946".parse().unwrap());
    assert_eq!(c.advertise, None);
    assert!(c.join.is_empty() && c.retry_join.is_empty() && c.tags.is_empty());
    assert_eq!(c.data_dir, PathBuf::from("/tmp/rumor-default"));
    assert_eq!(c.control, "/tmp/rumor-default/control.sock");
    assert_eq!(c.profile, Profile::Lan);
    assert_eq!(c.log_level, "info");
    assert!(!c.log_json && !c.dev);
    assert_eq!(c.max_event_bytes, 1024);
    assert_eq!(c.reconnect_timeout, Duration::from_secs(86400));
    assert_eq!(c.tombstone_timeout, Duration::from_secs(86400));
    assert_eq!(c.priority_boost, 5);
    assert_eq!(c.config_file, None);
}

#[test]
fn file_beats_default_and_flag_beats_file() {
    let f = file(
        r#"
node = "from-file"
bind = "10.0.0.1:8000"
join = ["a:1", "b:2"]
log_level = "warn"
log_json = true
reconnect_timeout = "1h"
max_event_bytes = 512
[tags]
role = "web"
dc = "east"
"#,
    );
    let c = AgentArgs::default()
        .resolve_with(Some(&f), &host())
        .unwrap();
    assert_eq!(c.node, "from-file");
    assert_eq!(c.bind, "10.0.0.1:8000".parse().unwrap());
    assert_eq!(c.join, vec!["a:1", "b:2"]);
    assert_eq!(c.log_level, "warn");
    assert!(c.log_json);
    assert_eq!(c.reconnect_timeout, Duration::from_secs(3600));
    assert_eq!(c.max_event_bytes, 512);
    assert_eq!(c.tags["role"], "web");
    assert_eq!(c.config_file, Some(PathBuf::from("/etc/rumor/rumor.toml")));

    let args = AgentArgs {
        node: Some("from-flag".into()),
        join: Some(vec!["c:3".into()]),
        tags: Some(vec!["role=db".into()]),
        log_json: Some(false),
        max_event_bytes: Some(100),
        ..AgentArgs::default()
    };
    let c = args.resolve_with(Some(&f), &host()).unwrap();
    assert_eq!(c.node, "from-flag");
    assert_eq!(
        c.bind,
        "10.0.0.1:8000".parse().unwrap(),
        "file still fills the rest"
    );
    assert_eq!(
        c.join,
        vec!["c:3"],
        "a list from a flag replaces the file's"
    );
    assert_eq!(c.tags["role"], "db", "a tag flag wins over the file's tag");
    assert_eq!(c.tags["dc"], "east", "tags merge key by key");
    assert!(!c.log_json, "--log-json=false beats log_json = true");
    assert_eq!(c.max_event_bytes, 100);
}

#[test]
fn flag_beats_env_beats_file() {
    let f = file("node = \"from-file\"\nprofile = \"wan\"\nlog_level = \"warn\"\n");
    let env = [
        ("RUMOR_NODE", "from-env"),
        ("RUMOR_PROFILE", "local"),
        ("RUMOR_TAGS", "a=1,b=2"),
        ("RUMOR_JOIN", "h1:7946,h2:7946"),
        ("RUMOR_LOG_JSON", "true"),
        ("RUMOR_DEV", "0"),
    ];
    let args = parse_with_env(&[], &env);
    let c = args.resolve_with(Some(&f), &host()).unwrap();
    assert_eq!(c.node, "from-env", "env beats file");
    assert_eq!(c.profile, Profile::Local, "env beats file");
    assert_eq!(c.log_level, "warn", "file fills what env does not set");
    assert_eq!(
        c.join,
        vec!["h1:7946", "h2:7946"],
        "env lists are comma-separated"
    );
    assert_eq!(c.tags.get("a").map(String::as_str), Some("1"));
    assert_eq!(c.tags.get("b").map(String::as_str), Some("2"));
    assert!(c.log_json);
    assert!(!c.dev);

    let args = parse_with_env(
        &[
            "--node",
            "from-flag",
            "--profile",
            "lan",
            "--tag",
            "c=3",
            "--log-json=false",
        ],
        &env,
    );
    let c = args.resolve_with(Some(&f), &host()).unwrap();
    assert_eq!(c.node, "from-flag", "flag beats env");
    assert_eq!(c.profile, Profile::Lan, "flag beats env");
    assert_eq!(c.tags.len(), 1, "--tag replaces RUMOR_TAGS: {:?}", c.tags);
    assert!(!c.log_json, "--log-json=false beats RUMOR_LOG_JSON=true");
}

#[test]
fn bare_bool_flags_and_repeated_lists_parse() {
    let args = parse_with_env(
        &[
            "--dev",
            "--log-json",
            "--join",
            "a:1",
            "--join",
            "b:2",
            "--tag",
            "x=1",
            "--tag",
            "y=2",
        ],
        &[],
    );
    assert_eq!(args.dev, Some(true));
    assert_eq!(args.log_json, Some(true));
    assert_eq!(args.join, Some(vec!["a:1".into(), "b:2".into()]));
    assert_eq!(args.tags.as_ref().map(Vec::len), Some(2));
    let none = parse_with_env(&[], &[]);
    assert_eq!(none.dev, None);
    assert_eq!(none.join, None);
}

#[test]
fn dev_defaults() {
    let args = AgentArgs {
        dev: Some(true),
        ..AgentArgs::default()
    };
    let c = args.resolve_with(None, &host()).unwrap();
    assert!(c.dev);
    assert_eq!(c.bind, "127.0.0.1:7946".parse().unwrap());
    assert_eq!(c.profile, Profile::Local);
    assert_eq!(c.log_level, "info");

    let args = AgentArgs {
        dev: Some(true),
        bind: Some("127.0.0.2:9000".into()),
        profile: Some(Profile::Wan),
        ..AgentArgs::default()
    };
    let c = args.resolve_with(None, &host()).unwrap();
    assert_eq!(
        c.bind,
        "127.0.0.2:9000".parse().unwrap(),
        "given bind wins over --dev"
    );
    assert_eq!(c.profile, Profile::Wan, "given profile wins over --dev");

    // `dev = true` in the file works too.
    let c = AgentArgs::default()
        .resolve_with(Some(&file("dev = true\n")), &host())
        .unwrap();
    assert_eq!(c.bind.ip(), IpAddr::from([127, 0, 0, 1]));
}

#[test]
fn unknown_key_names_file_and_line() {
    let err = ConfigFile::parse(
        Path::new("/etc/rumor/rumor.toml"),
        "node = \"a\"\n\nbnd = \"1.2.3.4\"\n".into(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("/etc/rumor/rumor.toml:3:1: "), "{msg}");
    assert!(msg.contains("unknown field `bnd`"), "{msg}");
    assert!(msg.contains("`bind`"), "lists the known keys: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn type_error_names_file_and_line() {
    let err = ConfigFile::parse(
        Path::new("c.toml"),
        "node = \"a\"\nmax_event_bytes = \"big\"\n".into(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("c.toml:2:"), "{msg}");
}

/// The error that resolving a config file with `text` (and no flags) gives.
fn file_error(text: &str) -> String {
    AgentArgs::default()
        .resolve_with(Some(&file(text)), &host())
        .unwrap_err()
        .to_string()
}

#[test]
fn invalid_value_in_file_names_file_and_line() {
    let msg = file_error("node = \"ok\"\nbind = \"not an address\"\n");
    assert!(msg.starts_with("/etc/rumor/rumor.toml:2:"), "{msg}");
    assert!(
        msg.contains("not an address") && msg.contains("IP:PORT"),
        "{msg}"
    );

    let msg = file_error("[tags]\n\"bad key\" = \"x\"\n");
    assert!(msg.starts_with("/etc/rumor/rumor.toml:"), "{msg}");
    assert!(msg.contains("bad key"), "{msg}");
}

#[test]
fn missing_file_names_path() {
    let args = AgentArgs {
        config: Some(PathBuf::from("/nonexistent/rumor.toml")),
        ..AgentArgs::default()
    };
    let msg = args.resolve().unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/rumor.toml"), "{msg}");
    assert!(msg.contains("not found"), "{msg}");
}

#[test]
fn tags() {
    assert_eq!(
        parse_tag("role=web").unwrap(),
        ("role".into(), "web".into())
    );
    assert_eq!(parse_tag("k=a=b").unwrap(), ("k".into(), "a=b".into()));
    assert_eq!(parse_tag("k=").unwrap(), ("k".into(), String::new()));
    for bad in ["role", "=web", "bad key=1", ""] {
        let msg = parse_tag(bad).unwrap_err().to_string();
        assert!(msg.contains(&format!("{bad:?}")), "names the value: {msg}");
    }
    let msg = parse_tag("role").unwrap_err().to_string();
    assert!(msg.contains("KEY=VALUE"), "{msg}");
}

#[test]
fn durations() {
    assert_eq!(
        parse_duration("t", "24h").unwrap(),
        Duration::from_secs(86400)
    );
    assert_eq!(parse_duration("t", "2s").unwrap(), Duration::from_secs(2));
    assert_eq!(
        parse_duration("t", "1h 30m").unwrap(),
        Duration::from_secs(5400)
    );
    assert_eq!(
        parse_duration("t", "250ms").unwrap(),
        Duration::from_millis(250)
    );
    for bad in ["", "soon", "24", "-1s"] {
        let msg = parse_duration("reconnect_timeout", bad)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("reconnect_timeout") && msg.contains(&format!("{bad:?}")),
            "{msg}"
        );
    }
    let args = AgentArgs {
        tombstone_timeout: Some("forever".into()),
        ..AgentArgs::default()
    };
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(
        msg.contains("tombstone_timeout") && msg.contains("forever"),
        "{msg}"
    );
}

#[test]
fn node_names() {
    for good in ["a", "web-1", "host.example.com", "A_b-9", &"x".repeat(64)] {
        assert!(validate_node_name(good).is_ok(), "{good}");
    }
    for bad in ["", "has space", "tab\t", "é", "a/b", &"x".repeat(65)] {
        let msg = validate_node_name(bad).unwrap_err().to_string();
        assert!(msg.contains("1-64 bytes"), "states the rule: {msg}");
    }
    let args = AgentArgs {
        node: Some("no good".into()),
        ..AgentArgs::default()
    };
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(msg.contains("\"no good\""), "{msg}");

    let bad_host = HostDefaults {
        hostname: Ok("bad host".into()),
        data_dir: PathBuf::from("/x"),
    };
    let msg = AgentArgs::default()
        .resolve_with(None, &bad_host)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("--node"), "{msg}");
}

#[test]
fn addresses() {
    assert_eq!(
        parse_addr("bind", "10.0.0.5", 7946).unwrap(),
        "10.0.0.5:7946".parse().unwrap()
    );
    assert_eq!(
        parse_addr("bind", "10.0.0.5:1", 7946).unwrap(),
        "10.0.0.5:1".parse().unwrap()
    );
    assert_eq!(
        parse_addr("bind", "::1", 7946).unwrap(),
        "[::1]:7946".parse().unwrap()
    );
    assert_eq!(
        parse_addr("bind", "[::1]:5", 7946).unwrap(),
        "[::1]:5".parse().unwrap()
    );
    let msg = parse_addr("bind", "localhost:99999", 7946)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bind") && msg.contains("localhost:99999"),
        "{msg}"
    );

    // A bare advertise IP takes the bind port.
    let args = AgentArgs {
        bind: Some("0.0.0.0:8001".into()),
        advertise: Some("192.0.2.7".into()),
        ..AgentArgs::default()
    };
    let c = args.resolve_with(None, &host()).unwrap();
    assert_eq!(c.advertise, Some("192.0.2.7:8001".parse().unwrap()));
}

#[test]
fn max_event_bytes_bounds() {
    for (n, ok) in [
        (0, false),
        (1, true),
        (1024, true),
        (MAX_EVENT_BYTES_CEILING, true),
        (MAX_EVENT_BYTES_CEILING + 1, false),
    ] {
        let args = AgentArgs {
            max_event_bytes: Some(n),
            ..AgentArgs::default()
        };
        assert_eq!(args.resolve_with(None, &host()).is_ok(), ok, "{n}");
    }
}

#[test]
fn realtime_priority_bounds_and_sources() {
    assert_eq!(
        AgentArgs::default()
            .resolve_with(None, &host())
            .unwrap()
            .realtime_priority,
        1
    );
    for (n, ok) in [(0, true), (1, true), (99, true), (100, false), (255, false)] {
        let args = AgentArgs {
            realtime_priority: Some(n),
            ..AgentArgs::default()
        };
        assert_eq!(args.resolve_with(None, &host()).is_ok(), ok, "{n}");
    }
    let args = parse_with_env(&[], &[("RUMOR_REALTIME_PRIORITY", "0")]);
    assert_eq!(
        args.resolve_with(None, &host()).unwrap().realtime_priority,
        0
    );
    let args = parse_with_env(&["--realtime-priority", "7"], &[]);
    assert_eq!(
        args.resolve_with(None, &host()).unwrap().realtime_priority,
        7
    );
    let f = file("realtime_priority = 3\n");
    let c = AgentArgs::default()
        .resolve_with(Some(&f), &host())
        .unwrap();
    assert_eq!(c.realtime_priority, 3);
    let msg = file_error("node = \"a\"\nrealtime_priority = 100\n");
    assert!(msg.starts_with("/etc/rumor/rumor.toml:2:"), "{msg}");
    assert!(
        msg.contains("realtime_priority") && msg.contains("between 0 (off) and 99"),
        "{msg}"
    );
}

#[test]
fn priority_boost_bounds_and_sources() {
    for (n, ok) in [(0, true), (5, true), (19, true), (20, false), (255, false)] {
        let args = AgentArgs {
            priority_boost: Some(n),
            ..AgentArgs::default()
        };
        assert_eq!(args.resolve_with(None, &host()).is_ok(), ok, "{n}");
    }
    let args = parse_with_env(&[], &[("RUMOR_PRIORITY_BOOST", "0")]);
    assert_eq!(args.resolve_with(None, &host()).unwrap().priority_boost, 0);
    let f = file("priority_boost = 2\n");
    let c = AgentArgs::default()
        .resolve_with(Some(&f), &host())
        .unwrap();
    assert_eq!(c.priority_boost, 2);
    let msg = file_error("node = \"a\"\npriority_boost = 40\n");
    assert!(msg.starts_with("/etc/rumor/rumor.toml:2:"), "{msg}");
    assert!(
        msg.contains("priority_boost") && msg.contains("0 (off)"),
        "{msg}"
    );
}

#[test]
fn data_dir_defaults() {
    let home = Some(PathBuf::from("/home/u"));
    assert_eq!(
        data_dir_for(0, None, home.clone()),
        PathBuf::from("/var/lib/rumor")
    );
    assert_eq!(
        data_dir_for(1000, Some("/state".into()), home.clone()),
        PathBuf::from("/state/rumor")
    );
    assert_eq!(
        data_dir_for(1000, Some("relative".into()), home.clone()),
        PathBuf::from("/home/u/.local/state/rumor"),
        "a relative XDG_STATE_HOME is ignored"
    );
    assert_eq!(
        data_dir_for(1000, None, home),
        PathBuf::from("/home/u/.local/state/rumor")
    );
    assert!(default_data_dir().is_absolute() || std::env::var_os("HOME").is_none());
}

#[test]
fn control_defaults_to_data_dir_socket() {
    let args = AgentArgs {
        data_dir: Some("/srv/rumor".into()),
        ..AgentArgs::default()
    };
    assert_eq!(
        args.resolve_with(None, &host()).unwrap().control,
        "/srv/rumor/control.sock"
    );
}

#[test]
fn reload_reads_tags_and_level_and_flags_still_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rumor.toml");
    std::fs::write(
        &path,
        "log_level = \"debug\"\n[tags]\nrole = \"web\"\nv = \"1\"\n",
    )
    .unwrap();
    let r = reload_file(&path).unwrap();
    assert_eq!(r.log_level.as_deref(), Some("debug"));
    assert_eq!(r.tags.len(), 2);

    let args = AgentArgs {
        config: Some(path.clone()),
        tags: Some(vec!["v=2".into()]),
        ..AgentArgs::default()
    };
    let r = args.reload().unwrap();
    assert_eq!(r.tags["v"], "2");
    assert_eq!(r.tags["role"], "web");
    assert_eq!(r.log_level.as_deref(), Some("debug"));

    std::fs::write(&path, "lg_level = \"debug\"\n").unwrap();
    let msg = reload_file(&path).unwrap_err().to_string();
    assert!(msg.contains("rumor.toml:1:1"), "{msg}");
}

#[test]
fn line_columns() {
    assert_eq!(line_column("abc", 0), (1, 1));
    assert_eq!(line_column("abc\ndef", 5), (2, 2));
    assert_eq!(line_column("a\n", 99), (2, 1));
}
