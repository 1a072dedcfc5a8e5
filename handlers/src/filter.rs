//! Serf's event filter syntax, and the `--event-handler [FILTER=]COMMAND` flag.
//!
//! A filter is a comma-separated list of `member-join`, `member-leave`, `member-failed`,
//! `member-update`, `member-reap`, `user`, `user:NAME`, `query`, `query:NAME` and `*`. A handler
//! runs for an event when any item of its filter matches the event.

use std::fmt;

use thiserror::Error;

use crate::event::{Event, MemberEventKind};

/// What the error messages list as valid filter items.
const VALID_ITEMS: &str = "member-join, member-leave, member-failed, member-update, member-reap, \
     user, user:NAME, query, query:NAME or *";

/// A filter typo or an empty filter. The message names the offending value, the whole input,
/// and what would have been valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    #[error("unknown event filter {value:?} in {input:?}; expected {VALID_ITEMS}")]
    Unknown { value: String, input: String },
    #[error("empty event filter in {input:?}; expected {VALID_ITEMS}")]
    Empty { input: String },
    #[error(
        "event filter {value:?} in {input:?} names no event; write {kind}:NAME, or {kind} for all"
    )]
    EmptyName {
        kind: &'static str,
        value: String,
        input: String,
    },
    #[error(
        "empty command in {input:?}; expected [FILTER=]COMMAND, e.g. member-join=/usr/local/bin/on-join.sh"
    )]
    EmptyCommand { input: String },
}

impl FilterError {
    /// Replaces the input the message quotes, so an error from parsing the filter part of a
    /// `--event-handler` value quotes the whole flag value.
    fn with_input(self, whole: &str) -> FilterError {
        let input = whole.to_string();
        match self {
            FilterError::Unknown { value, .. } => FilterError::Unknown { value, input },
            FilterError::Empty { .. } => FilterError::Empty { input },
            FilterError::EmptyName { kind, value, .. } => {
                FilterError::EmptyName { kind, value, input }
            }
            FilterError::EmptyCommand { .. } => FilterError::EmptyCommand { input },
        }
    }
}

/// One item of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FilterItem {
    /// `*`: every event, queries included.
    All,
    /// `member-join` … `member-reap`.
    Member(MemberEventKind),
    /// `user` (`None`) or `user:NAME`.
    User(Option<String>),
    /// `query` (`None`) or `query:NAME`.
    Query(Option<String>),
}

impl FilterItem {
    fn parse(item: &str, input: &str) -> Result<FilterItem, FilterError> {
        let named = |kind: &'static str, name: &str| {
            if name.is_empty() {
                Err(FilterError::EmptyName {
                    kind,
                    value: item.to_string(),
                    input: input.to_string(),
                })
            } else {
                Ok(Some(name.to_string()))
            }
        };
        Ok(match item {
            "*" => FilterItem::All,
            "member-join" => FilterItem::Member(MemberEventKind::Join),
            "member-leave" => FilterItem::Member(MemberEventKind::Leave),
            "member-failed" => FilterItem::Member(MemberEventKind::Failed),
            "member-update" => FilterItem::Member(MemberEventKind::Update),
            "member-reap" => FilterItem::Member(MemberEventKind::Reap),
            "user" => FilterItem::User(None),
            "query" => FilterItem::Query(None),
            _ => {
                if let Some(name) = item.strip_prefix("user:") {
                    FilterItem::User(named("user", name)?)
                } else if let Some(name) = item.strip_prefix("query:") {
                    FilterItem::Query(named("query", name)?)
                } else {
                    return Err(FilterError::Unknown {
                        value: item.to_string(),
                        input: input.to_string(),
                    });
                }
            }
        })
    }

    /// Whether this item selects the event.
    pub fn matches(&self, event: &Event) -> bool {
        match (self, event) {
            (FilterItem::All, _) => true,
            (FilterItem::Member(want), Event::Member { kind, .. }) => want == kind,
            (FilterItem::User(want), Event::User(user)) => {
                want.as_deref().is_none_or(|name| name == user.name)
            }
            (FilterItem::Query(want), Event::Query(query)) => {
                want.as_deref().is_none_or(|name| name == query.name)
            }
            _ => false,
        }
    }
}

impl fmt::Display for FilterItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterItem::All => f.write_str("*"),
            FilterItem::Member(kind) => f.write_str(kind.as_str()),
            FilterItem::User(None) => f.write_str("user"),
            FilterItem::User(Some(name)) => write!(f, "user:{name}"),
            FilterItem::Query(None) => f.write_str("query"),
            FilterItem::Query(Some(name)) => write!(f, "query:{name}"),
        }
    }
}

/// Which events a handler runs for: a non-empty list of [`FilterItem`]s, any of which may match.
/// Displays as the comma-separated text it was parsed from (normalised).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventFilter {
    items: Vec<FilterItem>,
}

impl EventFilter {
    /// The filter of a handler given without one: every event (`*`).
    pub fn all() -> EventFilter {
        EventFilter {
            items: vec![FilterItem::All],
        }
    }

    /// Parses Serf's comma-separated filter text, e.g. `member-join,member-leave` or
    /// `user:deploy`. Whitespace around items is ignored; an empty item is an error.
    pub fn parse(text: &str) -> Result<EventFilter, FilterError> {
        EventFilter::parse_items(&[text])
    }

    /// Parses a list of filter texts (the TOML `events = [...]` form); each may itself be a
    /// comma-separated list. An empty list is an error (omit the key for every event).
    pub fn parse_items<S: AsRef<str>>(texts: &[S]) -> Result<EventFilter, FilterError> {
        let whole = texts
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",");
        let mut items = Vec::new();
        for text in texts {
            for item in text.as_ref().split(',') {
                let item = item.trim();
                if item.is_empty() {
                    return Err(FilterError::Empty { input: whole });
                }
                let item = FilterItem::parse(item, &whole)?;
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        if items.is_empty() {
            return Err(FilterError::Empty { input: whole });
        }
        Ok(EventFilter { items })
    }

    /// Whether the handler with this filter runs for the event.
    pub fn matches(&self, event: &Event) -> bool {
        self.items.iter().any(|item| item.matches(event))
    }

    /// The items, in the order they were written.
    pub fn items(&self) -> &[FilterItem] {
        &self.items
    }
}

impl Default for EventFilter {
    fn default() -> Self {
        EventFilter::all()
    }
}

impl fmt::Display for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for EventFilter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventFilter::parse(text)
    }
}

/// A handler as given on the command line: `--event-handler [FILTER=]COMMAND`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub filter: EventFilter,
    pub command: String,
}

impl HandlerSpec {
    /// Parses `[FILTER=]COMMAND`.
    ///
    /// Serf splits at the first `=`. rumor does too, but only when the part before it looks
    /// like a filter: every comma-separated item is made of `[a-z0-9:*._-]`, or is
    /// `user:NAME` / `query:NAME` with `NAME` in `[A-Za-z0-9._-]`. Otherwise the whole value is
    /// the command, so `FOO=bar ./x.sh` and `./x.sh --mode=fast` run as written. A prefix that
    /// looks like a filter but does not parse (`member-jion=x`) is an error, so a typo fails
    /// agent start instead of silently never running. To run a command whose start looks like
    /// a filter, write the filter explicitly: `*=a=b`.
    pub fn parse_cli(value: &str) -> Result<HandlerSpec, FilterError> {
        let (filter, command) = match value.split_once('=') {
            Some((prefix, command)) if looks_like_filter(prefix) => (
                EventFilter::parse(prefix).map_err(|e| e.with_input(value))?,
                command,
            ),
            _ => (EventFilter::all(), value),
        };
        if command.trim().is_empty() {
            return Err(FilterError::EmptyCommand {
                input: value.to_string(),
            });
        }
        Ok(HandlerSpec {
            filter,
            command: command.to_string(),
        })
    }
}

impl std::str::FromStr for HandlerSpec {
    type Err = FilterError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        HandlerSpec::parse_cli(value)
    }
}

/// Whether the text before a `=` is meant as a filter (see [`HandlerSpec::parse_cli`]).
fn looks_like_filter(prefix: &str) -> bool {
    if prefix.is_empty() {
        return false;
    }
    prefix.split(',').all(|item| {
        let named = item
            .strip_prefix("user:")
            .or_else(|| item.strip_prefix("query:"));
        match named {
            Some(name) => name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            None => item.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, ':' | '*' | '.' | '_' | '-')
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{QueryEvent, UserEvent};

    fn member(kind: MemberEventKind) -> Event {
        Event::Member {
            kind,
            members: vec![],
        }
    }

    fn user(name: &str) -> Event {
        Event::User(UserEvent {
            ltime: 1,
            name: name.into(),
            payload: vec![],
            coalesce: false,
            origin: "a".into(),
        })
    }

    fn query(name: &str) -> Event {
        Event::Query(QueryEvent {
            ltime: 1,
            id: 1,
            name: name.into(),
            payload: vec![],
            origin: "a".into(),
        })
    }

    #[test]
    fn parses_every_item_and_displays_it_back() {
        let text = "member-join,member-leave,member-failed,member-update,member-reap,user,\
                    user:deploy,query,query:uptime,*";
        let filter = EventFilter::parse(text).unwrap();
        assert_eq!(filter.items().len(), 10);
        assert_eq!(filter.to_string(), text);
    }

    #[test]
    fn matches_by_kind_and_name() {
        let filter = EventFilter::parse("member-join, user:deploy ,query").unwrap();
        assert!(filter.matches(&member(MemberEventKind::Join)));
        assert!(!filter.matches(&member(MemberEventKind::Leave)));
        assert!(filter.matches(&user("deploy")));
        assert!(!filter.matches(&user("deployx")));
        assert!(filter.matches(&query("anything")));

        let all = EventFilter::all();
        assert!(all.matches(&member(MemberEventKind::Reap)));
        assert!(all.matches(&user("x")));
        assert!(all.matches(&query("x")));

        let any_user = EventFilter::parse("user").unwrap();
        assert!(any_user.matches(&user("x")));
        assert!(!any_user.matches(&query("x")));
        let named_query = EventFilter::parse("query:uptime").unwrap();
        assert!(named_query.matches(&query("uptime")));
        assert!(!named_query.matches(&query("load")));
    }

    #[test]
    fn errors_name_the_value_and_list_the_valid_ones() {
        let err = EventFilter::parse("member-join,member-jion").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown event filter \"member-jion\" in \"member-join,member-jion\"; expected \
             member-join, member-leave, member-failed, member-update, member-reap, user, \
             user:NAME, query, query:NAME or *"
        );
        assert!(matches!(
            EventFilter::parse("member-join,,user"),
            Err(FilterError::Empty { .. })
        ));
        assert!(matches!(
            EventFilter::parse(""),
            Err(FilterError::Empty { .. })
        ));
        assert!(matches!(
            EventFilter::parse("user:"),
            Err(FilterError::EmptyName { kind: "user", .. })
        ));
        assert!(matches!(
            EventFilter::parse_items::<&str>(&[]),
            Err(FilterError::Empty { .. })
        ));
    }

    #[test]
    fn parse_items_accepts_lists_and_drops_duplicates() {
        let filter =
            EventFilter::parse_items(&["member-join", "member-leave,member-join"]).unwrap();
        assert_eq!(filter.to_string(), "member-join,member-leave");
    }

    #[test]
    fn cli_spec_with_and_without_filter() {
        let spec = HandlerSpec::parse_cli("member-join,member-leave=/bin/on-change.sh").unwrap();
        assert_eq!(spec.filter.to_string(), "member-join,member-leave");
        assert_eq!(spec.command, "/bin/on-change.sh");

        let spec = HandlerSpec::parse_cli("./handler.sh").unwrap();
        assert_eq!(spec.filter, EventFilter::all());
        assert_eq!(spec.command, "./handler.sh");

        // Only the first `=` splits.
        let spec = HandlerSpec::parse_cli("user:deploy=./deploy.sh --env=prod").unwrap();
        assert_eq!(spec.filter.to_string(), "user:deploy");
        assert_eq!(spec.command, "./deploy.sh --env=prod");

        // Event names may have capitals.
        let spec = HandlerSpec::parse_cli("user:Deploy=x").unwrap();
        assert_eq!(spec.filter.to_string(), "user:Deploy");

        let spec = HandlerSpec::parse_cli("*=echo hi").unwrap();
        assert_eq!(spec.filter, EventFilter::all());
        assert_eq!(spec.command, "echo hi");
    }

    #[test]
    fn cli_spec_whose_prefix_is_not_a_filter_is_all_command() {
        for value in [
            "FOO=bar ./x.sh",
            "./x.sh --mode=fast",
            "env A=1 ./x.sh",
            "/usr/bin/x=y",
        ] {
            let spec = HandlerSpec::parse_cli(value).unwrap();
            assert_eq!(spec.filter, EventFilter::all(), "{value}");
            assert_eq!(spec.command, value);
        }
    }

    #[test]
    fn cli_spec_typo_is_an_error_quoting_the_whole_value() {
        let err = HandlerSpec::parse_cli("member-jion=x").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("unknown event filter \"member-jion\" in \"member-jion=x\"; expected member-join, member-leave"),
            "{text}"
        );
        assert!(matches!(
            HandlerSpec::parse_cli("member-join="),
            Err(FilterError::EmptyCommand { .. })
        ));
        assert!(matches!(
            HandlerSpec::parse_cli(""),
            Err(FilterError::EmptyCommand { .. })
        ));
    }
}
