//! Serf's commands as Serf declares them: each one's name, arguments, description and flags,
//! the usage texts built from them, and the parsing of a command line against them.
//! `translate.rs` runs each as the rumor command it stands for.

use super::Failure;
use super::flags::{self, Flag, FlagError, Kind, Parsed};

/// One of Serf's commands.
pub(super) struct Command {
    pub name: &'static str,
    /// What `serf --help` lists.
    synopsis: &'static str,
    /// After `Usage: serf NAME`.
    arguments: &'static str,
    description: &'static str,
    flags: &'static [Flag],
}

const RPC_ADDR: Flag = Flag {
    name: "rpc-addr",
    kind: Kind::Text,
    value: "<socket|host:port>",
    help: "The agent's control API (rumor's --control). Default: $SERF_RPC_ADDR, else where rumor finds it.",
};
const RPC_AUTH: Flag = Flag {
    name: "rpc-auth",
    kind: Kind::Text,
    value: "<token>",
    help: "The control token (rumor's --control-token). Default: $SERF_RPC_AUTH.",
};

const fn flag(name: &'static str, kind: Kind, value: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        kind,
        value,
        help,
    }
}

const COMMANDS: &[Command] = &[
    Command {
        name: "members",
        synopsis: "Lists the members of the cluster",
        arguments: "[options]",
        description: "Outputs the members of the cluster as the local agent sees them.",
        flags: &[
            flag(
                "detailed",
                Kind::Bool,
                "",
                "Also show the protocol versions (text output).",
            ),
            flag("format", Kind::Text, "text", "Output format: text or json."),
            flag(
                "name",
                Kind::Text,
                "<regexp>",
                "Only members whose name fully matches.",
            ),
            flag(
                "role",
                Kind::Text,
                "<regexp>",
                "Deprecated: the same as -tag role=<regexp>.",
            ),
            flag(
                "status",
                Kind::Text,
                "<regexp>",
                "Only members whose status fully matches.",
            ),
            flag(
                "tag",
                Kind::List,
                "<key>=<regexp>",
                "Only members with this tag matching (repeatable).",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "event",
        synopsis: "Send a custom event through the cluster",
        arguments: "[options] name payload",
        description: "Dispatches a custom event across the cluster.",
        flags: &[
            flag(
                "coalesce",
                Kind::Bool,
                "true/false",
                "Whether this event can be coalesced. Default is true.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "query",
        synopsis: "Send a query to the cluster",
        arguments: "[options] name payload",
        description: "Dispatches a query to the cluster and prints the acks and answers.",
        flags: &[
            flag("format", Kind::Text, "text", "Output format: text or json."),
            flag(
                "no-ack",
                Kind::Bool,
                "",
                "Do not ask nodes to acknowledge the query.",
            ),
            flag(
                "node",
                Kind::List,
                "<name>",
                "Only this node answers (repeatable).",
            ),
            flag(
                "relay-factor",
                Kind::Text,
                "0",
                "Not supported by rumor (answers go straight to the asker); only 0.",
            ),
            flag(
                "tag",
                Kind::List,
                "<key>=<regexp>",
                "Only nodes with this tag matching answer (repeatable).",
            ),
            flag(
                "timeout",
                Kind::Text,
                "<duration>",
                "How long to wait for answers, e.g. 5s. Default: grows with the cluster.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "join",
        synopsis: "Tell the agent to join the cluster",
        arguments: "[options] address ...",
        description: "Tells the running agent to join the cluster through these addresses.",
        flags: &[
            flag(
                "replay",
                Kind::Bool,
                "",
                "Not supported by rumor: it never replays past events to a joining node.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "leave",
        synopsis: "Gracefully leaves the cluster and shuts down",
        arguments: "[options]",
        description: "Causes the agent to leave the cluster gracefully and shut down.",
        flags: &[RPC_ADDR, RPC_AUTH],
    },
    Command {
        name: "force-leave",
        synopsis: "Forces a member of the cluster to enter the \"left\" state",
        arguments: "[options] name",
        description: "Forces a failed member of the cluster to the left state.",
        flags: &[
            flag(
                "prune",
                Kind::Bool,
                "",
                "Also remove the member from the member list at once.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "tags",
        synopsis: "Modify tags of a running agent",
        arguments: "[options] ...",
        description: "Sets or deletes tags of the running agent; the cluster learns of it at once.",
        flags: &[
            flag(
                "delete",
                Kind::List,
                "<key>",
                "Delete this tag (repeatable).",
            ),
            flag(
                "set",
                Kind::List,
                "<key>=<value>",
                "Set this tag (repeatable).",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "keys",
        synopsis: "Manipulate the encryption keyring",
        arguments: "[options]...",
        description: "Installs, uses, removes or lists the gossip encryption keys on every member.",
        flags: &[
            flag(
                "install",
                Kind::Text,
                "<key>",
                "Install a new key on every member.",
            ),
            flag(
                "list",
                Kind::Bool,
                "",
                "List the keys installed on the members.",
            ),
            flag(
                "remove",
                Kind::Text,
                "<key>",
                "Remove a key from every member.",
            ),
            flag(
                "use",
                Kind::Text,
                "<key>",
                "Make an installed key the primary key.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "info",
        synopsis: "Provides debugging information for operators",
        arguments: "[options]",
        description: "Shows the agent's state: encryption, members, handlers, tags.",
        flags: &[
            flag("format", Kind::Text, "text", "Output format: text or json."),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "monitor",
        synopsis: "Stream logs from the agent",
        arguments: "[options]",
        description: "Streams the agent's log and events until interrupted.",
        flags: &[
            flag(
                "log-level",
                Kind::Text,
                "INFO",
                "TRACE, DEBUG, INFO, WARN or ERR.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "reachability",
        synopsis: "Test network reachability",
        arguments: "[options]",
        description: "Asks every member to answer, and reports those that do not.",
        flags: &[
            flag(
                "verbose",
                Kind::Bool,
                "",
                "Accepted; rumor always lists the nodes that did not answer.",
            ),
            RPC_ADDR,
            RPC_AUTH,
        ],
    },
    Command {
        name: "keygen",
        synopsis: "Generates a new encryption key",
        arguments: "",
        description: "Prints a new random 32-byte key, base64-encoded.",
        flags: &[],
    },
    Command {
        name: "version",
        synopsis: "Prints the version",
        arguments: "",
        description: "Prints the version of rumor answering as serf.",
        flags: &[],
    },
    Command {
        name: "agent",
        synopsis: "Not supported: run `rumor agent`",
        arguments: "[options]",
        description: "Run `rumor agent --config rumor.toml`; `rumor config import-serf` turns Serf's JSON configuration into rumor.toml.",
        flags: &[],
    },
    Command {
        name: "rtt",
        synopsis: "Not supported: rumor keeps no network coordinates",
        arguments: "[options] node1 [node2]",
        description: "rumor keeps no network coordinates; `serf reachability` checks that members answer.",
        flags: &[],
    },
];

/// `serf --help`.
pub fn top_usage() -> String {
    let mut text = String::from(
        "Usage: serf [--version] [--help] <command> [<args>]\n\n\
         (rumor, answering as serf)\n\n\
         Available commands are:\n",
    );
    for c in COMMANDS {
        text.push_str(&format!("    {:<15} {}\n", c.name, c.synopsis));
    }
    text
}

pub fn known(name: &str) -> bool {
    COMMANDS.iter().any(|c| c.name == name)
}

/// The command called `name`, if Serf has one.
pub(super) fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

impl Command {
    pub fn usage(&self) -> String {
        let mut text = format!(
            "Usage: serf {} {}\n\n  {}\n",
            self.name, self.arguments, self.description
        );
        if !self.flags.is_empty() {
            text.push('\n');
            text.push_str(&flags::usage(self.flags));
        }
        text
    }

    /// A usage error: `message`, then this command's usage.
    pub fn refuse(&self, message: impl Into<String>) -> anyhow::Error {
        Failure::Usage {
            message: Some(message.into()),
            usage: self.usage(),
        }
        .into()
    }

    pub fn parse(&self, args: &[String]) -> anyhow::Result<Parsed> {
        flags::parse(self.flags, args).map_err(|e| match e {
            FlagError::Help => Failure::Help {
                usage: self.usage(),
            }
            .into(),
            other => self.refuse(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_usage_and_unknown_flags_are_refused_with_it() {
        for c in COMMANDS {
            assert!(c.usage().starts_with(&format!("Usage: serf {}", c.name)));
        }
        let members = find("members").unwrap();
        let err = members.parse(&["-bogus".to_string()]).unwrap_err();
        match Failure::from(err) {
            Failure::Usage { message, usage } => {
                assert_eq!(
                    message.as_deref(),
                    Some("flag provided but not defined: -bogus")
                );
                assert!(usage.contains("-tag=<key>=<regexp>"), "{usage}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Failure::from(members.parse(&["-h".to_string()]).unwrap_err()),
            Failure::Help { .. }
        ));
        assert!(top_usage().contains("    reachability    Test network reachability\n"));
    }
}
