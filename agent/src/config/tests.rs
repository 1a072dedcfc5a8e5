//! Unit tests of the configuration merge, parsing and validation.

use std::net::IpAddr;
use std::path::Path;

use super::file::line_column;
use super::host::data_dir_for;
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
fn variables() -> Vec<String> {
    use clap::CommandFactory;
    Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|var| var.to_string_lossy().into_owned())
        .collect()
}

/// Parses `argv` with exactly the RUMOR_* variables in `env` set.
fn parse_with_env(argv: &[&str], env: &[(&str, &str)]) -> AgentArgs {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: every test that touches RUMOR_* variables holds ENV_LOCK, and nothing else in
    // this test binary reads them.
    unsafe {
        for v in variables() {
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
    let msg = parse_tag("note=a\rb").unwrap_err().to_string();
    assert!(msg.contains("control character"), "{msg}");
}

#[test]
fn tag_values_with_a_comma_are_refused_with_the_file_and_line() {
    let msg = file_error("node = \"ok\"\n[tags]\nzones = \"a,b\"\n");
    assert!(msg.starts_with("/etc/rumor/rumor.toml:"), "{msg}");
    assert!(msg.contains("\"zones\"") && msg.contains("','"), "{msg}");
}

#[test]
fn max_control_connections_defaults_and_is_checked() {
    let config = AgentArgs::default()
        .resolve_with(Some(&file("node = \"a\"\n")), &host())
        .unwrap();
    assert_eq!(
        config.max_control_connections,
        DEFAULT_MAX_CONTROL_CONNECTIONS
    );
    let config = AgentArgs::default()
        .resolve_with(
            Some(&file("node = \"a\"\nmax_control_connections = 16\n")),
            &host(),
        )
        .unwrap();
    assert_eq!(config.max_control_connections, 16);
    let msg = file_error("node = \"a\"\nmax_control_connections = 0\n");
    assert!(
        msg.contains("max_control_connections") && msg.contains("between 1 and"),
        "{msg}"
    );
}

/// Every setting whose value the agent hides in `--help` is a secret: handlers must not
/// inherit it (nor the file a secret is read from).
#[test]
fn handlers_never_inherit_a_secret_setting() {
    use clap::CommandFactory;
    let withheld = rumor_handlers::contract::WITHHELD_VARIABLES;
    for arg in Cli::command().get_arguments() {
        let Some(var) = arg.get_env().map(|v| v.to_string_lossy().into_owned()) else {
            continue;
        };
        let secret = arg.is_hide_env_values_set() || var == "RUMOR_CONTROL_TOKEN_FILE";
        assert_eq!(
            secret,
            withheld.contains(&var.as_str()),
            "{var}: a secret setting must be in WITHHELD_VARIABLES, and only those"
        );
    }
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

/// The keys the file accepts, as its unknown-key error lists them.
fn file_keys() -> Vec<String> {
    let Err(ConfigError::Syntax { message, .. }) =
        ConfigFile::parse(Path::new("k.toml"), "no_such_key = 1\n".into())
    else {
        panic!("an unknown key is refused");
    };
    let (_, expected) = message
        .split_once("expected one of")
        .expect("lists the keys");
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_tag_flag_is_taken_whole_and_the_variable_is_a_list() {
    // A comma inside a --tag value is part of the value (refused with the tag-value rule),
    // never a separator that turns the rest into tags of their own.
    let args = parse_with_env(&["--tag", "k=v,with,commas"], &[]);
    assert_eq!(
        args.tags.as_deref(),
        Some(&["k=v,with,commas".to_string()][..])
    );
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(msg.contains("\"v,with,commas\""), "{msg}");
    assert!(!msg.contains("\"with\""), "{msg}");
    let args = parse_with_env(&["--tag", "a=x=y", "--tag", "b=2"], &[]);
    let c = args.resolve_with(None, &host()).unwrap();
    assert_eq!((c.tags["a"].as_str(), c.tags["b"].as_str()), ("x=y", "2"));
    let args = parse_with_env(&[], &[("RUMOR_TAGS", "a=1,b=2")]);
    assert_eq!(args.resolve_with(None, &host()).unwrap().tags.len(), 2);
}

#[test]
fn every_file_key_has_a_flag_and_a_variable() {
    use clap::CommandFactory;
    let cli = Cli::command();
    let keys = file_keys();
    assert!(keys.len() > 20, "{keys:?}");
    for key in keys {
        let (flag, variable) = super::args::flag_and_variable(&key);
        let arg = cli
            .get_arguments()
            .find(|a| a.get_long().map(|l| format!("--{l}")) == Some(flag.clone()))
            .unwrap_or_else(|| panic!("config key {key} has no flag {flag}"));
        // RUMOR_TAGS is read by a hidden list argument of its own, so --tag is never split.
        let reader = match key.as_str() {
            "tags" => cli
                .get_arguments()
                .find(|a| a.get_long() == Some("tags-list"))
                .expect("the RUMOR_TAGS reader"),
            _ => arg,
        };
        assert_eq!(
            reader.get_env().map(|v| v.to_string_lossy().into_owned()),
            Some(variable),
            "config key {key}: {flag} reads the wrong variable"
        );
    }
}

#[test]
fn sources_take_the_given_value_then_the_files_and_locate_errors() {
    use super::resolve::Sources;
    let f = file("bind = \"bad\"\n");
    let check = |b: &String| parse_addr("bind", b, 1);
    let given = AgentArgs {
        bind: Some("10.0.0.1".into()),
        dev: Some(true),
        ..AgentArgs::default()
    };
    let none = AgentArgs::default();
    // A given value wins, and the file's (bad) value is not even checked.
    let src = Sources {
        args: &given,
        file: Some(&f),
    };
    let bind = src.get("bind", |a| &a.bind, |f| &f.bind, check).unwrap();
    assert_eq!(bind, Some("10.0.0.1:1".parse().unwrap()));
    assert_eq!(src.value(|a| &a.dev, |f| &f.dev), Some(true));
    // Without one, the file's is taken, and its error says where it is.
    let src = Sources {
        args: &none,
        file: Some(&f),
    };
    let msg = src
        .get("bind", |a| &a.bind, |f| &f.bind, check)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("/etc/rumor/rumor.toml:1:8: invalid bind \"bad\""),
        "{msg}"
    );
    // Neither: `None`, for the caller's default.
    let src = Sources {
        args: &none,
        file: None,
    };
    assert_eq!(
        src.get("bind", |a| &a.bind, |f| &f.bind, check).unwrap(),
        None
    );
    assert_eq!(src.value(|a| &a.dev, |f| &f.dev), None);
}

/// One setting given a different value by each source.
struct Ranked {
    key: &'static str,
    flag: &'static [&'static str],
    variable: &'static str,
    file: &'static str,
    /// What the setting resolves to from the flag, the variable, the file, and by default.
    expect: [&'static str; 4],
    show: fn(&AgentConfig) -> String,
}

#[test]
fn every_setting_ranks_flag_then_variable_then_file_then_default() {
    let cases = [
        Ranked {
            key: "node",
            flag: &["--node", "a"],
            variable: "b",
            file: "node = \"c\"",
            expect: ["a", "b", "c", "testhost"],
            show: |c| c.node.clone(),
        },
        Ranked {
            key: "bind",
            flag: &["--bind", "10.0.0.1:1"],
            variable: "10.0.0.2:2",
            file: "bind = \"10.0.0.3:3\"",
            expect: ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3", "0.0.0.0:7946"],
            show: |c| c.bind.to_string(),
        },
        Ranked {
            key: "max_event_bytes",
            flag: &["--max-event-bytes", "100"],
            variable: "200",
            file: "max_event_bytes = 300",
            expect: ["100", "200", "300", "1024"],
            show: |c| c.max_event_bytes.to_string(),
        },
        Ranked {
            key: "reconnect_timeout",
            flag: &["--reconnect-timeout", "1m"],
            variable: "2m",
            file: "reconnect_timeout = \"3m\"",
            expect: ["60", "120", "180", "86400"],
            show: |c| c.reconnect_timeout.as_secs().to_string(),
        },
        Ranked {
            key: "priority_boost",
            flag: &["--priority-boost", "1"],
            variable: "2",
            file: "priority_boost = 3",
            expect: ["1", "2", "3", "5"],
            show: |c| c.priority_boost.to_string(),
        },
        Ranked {
            key: "data_dir",
            flag: &["--data-dir", "/f"],
            variable: "/v",
            file: "data_dir = \"/file\"",
            expect: ["/f", "/v", "/file", "/tmp/rumor-default"],
            show: |c| c.data_dir.display().to_string(),
        },
        Ranked {
            key: "profile",
            flag: &["--profile", "lan"],
            variable: "wan",
            file: "profile = \"local\"",
            expect: ["lan", "wan", "local", "lan"],
            show: |c| format!("{:?}", c.profile).to_lowercase(),
        },
    ];
    for case in cases {
        let (_, variable) = super::args::flag_and_variable(case.key);
        let env = [(variable.as_str(), case.variable)];
        let f = file(&format!("{}\n", case.file));
        let resolved =
            |args: AgentArgs, file| (case.show)(&args.resolve_with(file, &host()).unwrap());
        let got = [
            resolved(parse_with_env(case.flag, &env), Some(&f)),
            resolved(parse_with_env(&[], &env), Some(&f)),
            resolved(parse_with_env(&[], &[]), Some(&f)),
            resolved(parse_with_env(&[], &[]), None),
        ];
        assert_eq!(
            got, case.expect,
            "{}: flag, variable, file, default",
            case.key
        );
    }
}

#[test]
fn a_bad_value_names_its_source_the_key_and_the_value() {
    let args = parse_with_env(&["--bind", "nowhere"], &[]);
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(
        msg.starts_with("--bind or RUMOR_BIND: invalid bind \"nowhere\": expected IP:PORT"),
        "{msg}"
    );
    let args = parse_with_env(&[], &[("RUMOR_MAX_RESPONSE_BYTES", "0")]);
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(
        msg.starts_with(
            "--max-response-bytes or RUMOR_MAX_RESPONSE_BYTES: invalid max_response_bytes \"0\""
        ),
        "{msg}"
    );
    let args = parse_with_env(&["--tag", "novalue"], &[]);
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(
        msg.starts_with("--tag or RUMOR_TAGS: invalid tag \"novalue\""),
        "{msg}"
    );
    // The same value from the file names the file and line instead.
    let msg = file_error("\n\nmax_response_bytes = 0\n");
    assert!(
        msg.starts_with("/etc/rumor/rumor.toml:3:22: invalid max_response_bytes \"0\""),
        "{msg}"
    );
    // A key is never echoed.
    let args = parse_with_env(&["--encrypt", "not-a-key"], &[]);
    let msg = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(
        msg.starts_with("--encrypt or RUMOR_ENCRYPT: invalid encrypt")
            && !msg.contains("not-a-key"),
        "{msg}"
    );
}

#[test]
fn token_and_metrics_come_from_flags_or_the_file() {
    let resolve = |args: AgentArgs, text: &str| args.resolve_with(Some(&file(text)), &host());
    let c = resolve(AgentArgs::default(), "").unwrap();
    assert_eq!((c.control_token, c.metrics), (None, None));

    let c = resolve(
        AgentArgs::default(),
        "control = \"0.0.0.0:7373\"\ncontrol_token_file = \"/etc/rumor/token\"\n\
         metrics = \"127.0.0.1:9946\"\n",
    )
    .unwrap();
    assert_eq!(
        c.control_token,
        Some(TokenSource::File(PathBuf::from("/etc/rumor/token")))
    );
    assert_eq!(c.metrics, Some("127.0.0.1:9946".parse().unwrap()));

    // A flag or variable wins over the file, whichever form either uses.
    let args = AgentArgs {
        control_token: Some("from-flag".into()),
        metrics: Some("[::1]:9000".into()),
        ..AgentArgs::default()
    };
    let c = resolve(args, "control_token_file = \"/etc/rumor/token\"\n").unwrap();
    assert_eq!(
        c.control_token,
        Some(TokenSource::Value("from-flag".into()))
    );
    assert_eq!(c.metrics, Some("[::1]:9000".parse().unwrap()));
}

#[test]
fn bad_control_settings_name_the_file_and_line() {
    let err = file_error("control_token = \"abc\"\ncontrol_token_file = \"/t\"\n");
    assert!(err.starts_with("/etc/rumor/rumor.toml:2:"), "{err}");
    assert!(err.contains("control_token is set too"), "{err}");
    assert!(!err.contains("abc"), "the token leaked into {err}");

    let err = file_error("\nmetrics = \"localhost\"\n");
    assert!(err.starts_with("/etc/rumor/rumor.toml:2:"), "{err}");
    assert!(err.contains("expected IP:PORT"), "{err}");
    let args = AgentArgs {
        metrics: Some("9946".into()),
        ..AgentArgs::default()
    };
    let err = args.resolve_with(None, &host()).unwrap_err().to_string();
    assert!(err.contains("invalid metrics \"9946\""), "{err}");
}

#[test]
fn the_direct_push_limit_is_a_hidden_test_setting() {
    use clap::CommandFactory;
    let c = AgentArgs::default().resolve_with(None, &host()).unwrap();
    assert_eq!(c.direct_push_limit, crate::cluster::plumtree::DIRECT_LIMIT);
    let args = parse_with_env(&["--direct-push-limit", "3"], &[]);
    assert_eq!(
        args.resolve_with(None, &host()).unwrap().direct_push_limit,
        3
    );
    let args = parse_with_env(&[], &[("RUMOR_DIRECT_PUSH_LIMIT", "0")]);
    assert_eq!(
        args.resolve_with(None, &host()).unwrap().direct_push_limit,
        0
    );
    let help = Cli::command().render_long_help().to_string();
    assert!(!help.contains("direct-push-limit"), "{help}");
}

#[test]
fn a_reload_names_the_settings_that_need_a_restart() {
    let started = AgentArgs::default().resolve_with(None, &host()).unwrap();
    let f = file(
        "bind = \"10.0.0.1\"\nprofile = \"wan\"\nlog_level = \"debug\"\n[tags]\nrole = \"db\"\n",
    );
    let fresh = AgentArgs::default()
        .resolve_with(Some(&f), &host())
        .unwrap();
    assert_eq!(started.restart_needed(&fresh), ["bind", "profile"]);
    assert!(started.restart_needed(&started).is_empty());
}

#[test]
fn dns_is_off_until_an_address_is_given_and_its_keys_are_checked() {
    let resolve = |args: AgentArgs, text: &str| args.resolve_with(Some(&file(text)), &host());
    let c = resolve(AgentArgs::default(), "dns_domain = \"cluster.example\"\n").unwrap();
    assert_eq!(c.dns, None);

    let c = resolve(
        AgentArgs::default(),
        "dns = \"127.0.0.1:8600\"\ndns_domain = \"Cluster.Example.\"\ndns_ttl = \"5s\"\n\
         dns_soa_min_ttl = \"1m\"\ndns_reverse = true\n",
    )
    .unwrap();
    assert_eq!(
        c.dns,
        Some(crate::dns::DnsConfig {
            addr: "127.0.0.1:8600".parse().unwrap(),
            domain: "cluster.example".into(),
            ttl: Duration::from_secs(5),
            soa_min_ttl: Duration::from_secs(60),
            reverse: true,
        })
    );
    let args = parse_with_env(&["--dns", "[::1]:53"], &[]);
    let c = args.resolve_with(None, &host()).unwrap();
    let dns = c.dns.unwrap();
    assert_eq!((dns.domain.as_str(), dns.ttl), ("rumor", Duration::ZERO));

    let err = file_error("dns = \"127.0.0.1:8600\"\ndns_domain = \"a..b\"\n");
    assert!(err.starts_with("/etc/rumor/rumor.toml:2:"), "{err}");
    assert!(err.contains("invalid dns_domain \"a..b\""), "{err}");
    let err = file_error("dns = \"8600\"\n");
    assert!(
        err.contains("expected IP:PORT, e.g. 127.0.0.1:8600"),
        "{err}"
    );
}
