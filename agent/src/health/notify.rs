//! The user event a check sends on a change of state (`notify = "EVENT"`): one JSON object,
//! so one handler anywhere in the cluster can tell a person.
//!
//! ```json
//! {"node":"web-1","check":"http","old":"passing","new":"critical","output":"HTTP 500 ..."}
//! ```
//!
//! `old` is `null` for a check's first result after the agent started (sent only when that
//! result is not passing: a node that starts healthy is not news). An event must fit the
//! cluster's `max_event_bytes` (name and payload together): the output is cut, at the end,
//! with `…`, until it does.

use serde::Serialize;

use super::state::{Change, State};

/// The notify event's payload.
#[derive(Debug, Clone, Serialize)]
pub struct Notice<'a> {
    pub node: &'a str,
    pub check: &'a str,
    pub old: Option<State>,
    pub new: State,
    pub output: String,
}

/// Whether a change is news: every change, but a first result that passes.
pub fn worth_telling(change: &Change) -> bool {
    change.old.is_some() || change.new != State::Passing
}

/// The payload for `change`, at most `budget` bytes (the event's limit less its name); the
/// output is shortened (ending in `…`) to fit. `None` when even an empty output does not fit.
pub fn payload(
    node: &str,
    check: &str,
    change: Change,
    output: &str,
    budget: usize,
) -> Option<Vec<u8>> {
    let encode = |output: String| {
        serde_json::to_vec(&Notice {
            node,
            check,
            old: change.old,
            new: change.new,
            output,
        })
        .expect("a notice serializes")
    };
    let whole = encode(output.to_string());
    if whole.len() <= budget {
        return Some(whole);
    }
    // Escapes make the JSON longer than the text by a varying amount: find the longest
    // beginning of the output that fits, by halving.
    let cut = |keep: usize| {
        let mut keep = keep;
        while !output.is_char_boundary(keep) {
            keep -= 1;
        }
        format!("{}…", &output[..keep])
    };
    let (mut fits, mut over) = (0, output.len());
    while over - fits > 1 {
        let middle = (fits + over) / 2;
        if encode(cut(middle)).len() <= budget {
            fits = middle;
        } else {
            over = middle;
        }
    }
    let shortened = encode(cut(fits));
    if shortened.len() <= budget {
        return Some(shortened);
    }
    let bare = encode(String::new());
    (bare.len() <= budget).then_some(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_json_that_fits() {
        let change = Change {
            old: Some(State::Passing),
            new: State::Critical,
        };
        let bytes = payload("web-1", "http", change, "HTTP 500", 1000).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"node": "web-1", "check": "http", "old": "passing",
                               "new": "critical", "output": "HTTP 500"})
        );
        let long = "\"é\n".repeat(500);
        let bytes = payload("web-1", "http", change, &long, 300).unwrap();
        assert!(bytes.len() <= 300, "{}", bytes.len());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["output"].as_str().unwrap().ends_with('…'));
        assert!(payload("web-1", "http", change, "x", 20).is_none());
    }

    #[test]
    fn a_healthy_start_is_not_news() {
        let first = |new| Change { old: None, new };
        assert!(!worth_telling(&first(State::Passing)));
        assert!(worth_telling(&first(State::Critical)));
        assert!(worth_telling(&Change {
            old: Some(State::Critical),
            new: State::Passing
        }));
    }
}
