//! Go's `flag` package, as Serf's commands parse their options: `-name=value`, `-name value`
//! (or with two dashes), booleans as `-name` or `-name=false`, parsing stopping at the first
//! argument that is not a flag (or after `--`), a repeated option overriding the earlier one
//! unless it is a list (Serf's `-tag`, `-node`, `-set`). Scripts written for `serf` pass flags
//! this way; clap's conventions differ (`-tag` would be four short flags), hence this parser.

use std::collections::BTreeMap;
use std::fmt;

/// One option a command takes.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Without dashes: `format`, `rpc-addr`.
    pub name: &'static str,
    pub kind: Kind,
    /// How the value is shown in the usage text (`<regexp>`, `json|text`), empty for booleans.
    pub value: &'static str,
    pub help: &'static str,
}

/// What an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `-name` is true; `-name=false` sets it false.
    Bool,
    /// A value; given twice, the last one wins.
    Text,
    /// A value, repeatable; every one is kept.
    List,
}

/// What a command line gave: the options by name, then the remaining arguments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    values: BTreeMap<&'static str, Vec<String>>,
    pub args: Vec<String>,
}

impl Parsed {
    /// A boolean option: its last value, or `default` when it was not given.
    pub fn bool(&self, name: &str, default: bool) -> bool {
        self.text(name).map_or(default, |v| v == "true")
    }

    /// A text option's last value.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Every value of a list option, in order.
    pub fn list(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }
}

/// A command line Go's flag package would refuse, with its wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// `-h`, `-help` or `--help`: show the usage.
    Help,
    Undefined(String),
    MissingValue(String),
    BadBool {
        name: String,
        value: String,
    },
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlagError::Help => f.write_str("help requested"),
            FlagError::Undefined(name) => write!(f, "flag provided but not defined: -{name}"),
            FlagError::MissingValue(name) => write!(f, "flag needs an argument: -{name}"),
            FlagError::BadBool { name, value } => {
                write!(
                    f,
                    "invalid boolean value {value:?} for -{name}: parse error"
                )
            }
        }
    }
}

/// Parses `args` (the command's arguments, after its name) against `flags`.
pub fn parse(flags: &[Flag], args: &[String]) -> Result<Parsed, FlagError> {
    let mut parsed = Parsed::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let Some(body) = flag_body(arg) else {
            // The first argument that is not a flag ends the options, as in Go.
            parsed.args.push(arg.clone());
            break;
        };
        if body.is_empty() {
            // `--`: what follows are arguments.
            break;
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            if matches!(name, "h" | "help") {
                return Err(FlagError::Help);
            }
            return Err(FlagError::Undefined(name.to_string()));
        };
        let value = match (flag.kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(value)) => go_bool(value)
                .ok_or_else(|| FlagError::BadBool {
                    name: name.to_string(),
                    value: value.to_string(),
                })?
                .to_string(),
            (_, Some(value)) => value.to_string(),
            (_, None) => rest
                .next()
                .cloned()
                .ok_or_else(|| FlagError::MissingValue(name.to_string()))?,
        };
        parsed.values.entry(flag.name).or_default().push(value);
    }
    parsed.args.extend(rest.cloned());
    Ok(parsed)
}

/// `name=value` of `-name=value` or `--name=value`; `Some("")` for `--`; `None` for an
/// argument (`-` alone and anything without a leading dash are arguments).
fn flag_body(arg: &str) -> Option<&str> {
    if arg == "--" {
        return Some("");
    }
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    (!body.is_empty() && !body.starts_with('-')).then_some(body)
}

/// Go's `strconv.ParseBool`.
fn go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The `Options:` part of a usage text, one option per line as Serf lays them out.
pub fn usage(flags: &[Flag]) -> String {
    let shown: Vec<String> = flags
        .iter()
        .map(|f| {
            if f.value.is_empty() {
                format!("-{}", f.name)
            } else {
                format!("-{}={}", f.name, f.value)
            }
        })
        .collect();
    let width = shown.iter().map(String::len).max().unwrap_or(0);
    let mut text = String::from("Options:\n\n");
    for (flag, shown) in flags.iter().zip(&shown) {
        text.push_str(&format!("  {shown:<width$}  {}\n", flag.help));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag {
            name: "format",
            kind: Kind::Text,
            value: "text",
            help: "output format",
        },
        Flag {
            name: "tag",
            kind: Kind::List,
            value: "<key>=<regexp>",
            help: "tag filter",
        },
        Flag {
            name: "coalesce",
            kind: Kind::Bool,
            value: "",
            help: "coalesce",
        },
    ];

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn go_forms_parse_and_the_first_argument_ends_the_options() {
        let p = parse(
            FLAGS,
            &args("-format=json -tag role=web --tag=dc=eu -coalesce=false deploy -tag x"),
        )
        .unwrap();
        assert_eq!(p.text("format"), Some("json"));
        assert_eq!(p.list("tag"), ["role=web", "dc=eu"]);
        assert!(!p.bool("coalesce", true));
        assert_eq!(
            p.args,
            ["deploy", "-tag", "x"],
            "flags after an argument are arguments"
        );

        let p = parse(FLAGS, &args("-coalesce -format text -format json -- -x")).unwrap();
        assert!(p.bool("coalesce", false));
        assert_eq!(p.text("format"), Some("json"), "the last one wins");
        assert_eq!(p.args, ["-x"]);
        assert_eq!(parse(FLAGS, &args("")).unwrap().text("format"), None);
        assert_eq!(parse(FLAGS, &args("- x")).unwrap().args, ["-", "x"]);
    }

    #[test]
    fn errors_use_gos_wording() {
        let err = |line: &str| parse(FLAGS, &args(line)).unwrap_err().to_string();
        assert_eq!(err("-bogus"), "flag provided but not defined: -bogus");
        assert_eq!(err("-format"), "flag needs an argument: -format");
        assert_eq!(
            err("-coalesce=maybe"),
            "invalid boolean value \"maybe\" for -coalesce: parse error"
        );
        assert_eq!(parse(FLAGS, &args("-h")), Err(FlagError::Help));
        assert_eq!(parse(FLAGS, &args("--help")), Err(FlagError::Help));
    }

    #[test]
    fn usage_lists_every_option() {
        let text = usage(FLAGS);
        // Padded to the longest, `-tag=<key>=<regexp>` (19 characters), then two spaces.
        assert!(
            text.contains("\n  -format=text         output format\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  -tag=<key>=<regexp>  tag filter\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  -coalesce            coalesce\n"),
            "{text}"
        );
    }
}
