//! What handlers ran, counted exactly, and the checker that compares it with what was sent.
//!
//! Each agent gets a shell handler that appends the name of every user event it runs to a file
//! named after the node ([`Records::handler`]), so "delivered exactly once" is a count of
//! lines, and the order of the lines is the order the runs happened in. Warm-up events (names
//! starting with [`WARMUP`]) are left out of every count.
//!
//! [`check`] is the checker of the fault, nemesis and kill tests: per node, which sent events
//! it never ran, which it ran more often than allowed, and which it ran that nobody sent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::agent::test_tempdir;
use crate::wait::wait_for;

/// Warm-up events (sent to make sure monitors are subscribed) start with this, and are not
/// counted.
pub const WARMUP: &str = "warm-";

/// A directory of record files, one per node.
pub struct Records {
    dir: TempDir,
}

impl Default for Records {
    fn default() -> Self {
        Records::new()
    }
}

impl Records {
    pub fn new() -> Records {
        Records {
            dir: test_tempdir(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `--event-handler` that records every user event into the node's file:
    /// `user=echo "$SERF_USER_EVENT" >> DIR/$SERF_SELF_NAME`.
    pub fn handler(&self) -> String {
        format!(
            "user=echo \"$SERF_USER_EVENT\" >> {}/$SERF_SELF_NAME",
            self.dir().display()
        )
    }

    pub fn path(&self, node: &str) -> PathBuf {
        self.dir().join(node)
    }

    /// The events `node`'s handler ran, in the order it ran them (warm-ups left out).
    pub fn lines(&self, node: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(node))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with(WARMUP))
            .map(str::to_owned)
            .collect()
    }

    /// How many times `node`'s handler ran each event.
    pub fn counts(&self, node: &str) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in self.lines(node) {
            *counts.entry(line).or_default() += 1;
        }
        counts
    }

    /// Waits until every one of `nodes` has run every one of `events` at least once; returns
    /// how long that took. Panics after `timeout` naming what each node still lacks.
    pub fn wait_delivered(
        &self,
        events: &[String],
        nodes: &[String],
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        wait_for(
            timeout,
            &format!("{} events to reach {} nodes", events.len(), nodes.len()),
            || {
                let lacking: Vec<String> = nodes
                    .iter()
                    .filter_map(|n| {
                        let got = self.counts(n);
                        let missing: Vec<&str> = events
                            .iter()
                            .filter(|e| !got.contains_key(*e))
                            .map(String::as_str)
                            .collect();
                        (!missing.is_empty()).then(|| format!("{n} lacks {}", summarize(&missing)))
                    })
                    .collect();
                if lacking.is_empty() {
                    Ok(())
                } else {
                    Err(lacking.join("; "))
                }
            },
        );
        start.elapsed()
    }

    /// [`check`] of every node in `expected` against `events`.
    pub fn check(&self, events: &[String], expected: &[(String, Expect)]) -> Verdict {
        check(
            events,
            expected
                .iter()
                .map(|(node, expect)| (node.clone(), *expect, self.counts(node))),
        )
    }
}

/// What a node's handler must have done with every sent event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Ran each exactly once (a node alive throughout, or stopped gracefully).
    ExactlyOnce,
    /// Ran each at least once, and at most `repeats` runs beyond one in all: a node killed
    /// that many times may run again the one run each crash interrupted.
    AtLeastOnce { repeats: usize },
}

/// One node's departures from what it should have run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeVerdict {
    pub node: String,
    /// Sent events its handler never ran.
    pub missing: Vec<String>,
    /// Events its handler ran more than once, with how many times.
    pub repeated: Vec<(String, usize)>,
    /// Runs beyond one, in all.
    pub extra_runs: usize,
    /// Runs beyond one that are more than [`Expect`] allows.
    pub too_many_repeats: bool,
    /// Events it ran that were never sent.
    pub unexpected: Vec<String>,
}

impl NodeVerdict {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty() && !self.too_many_repeats && self.unexpected.is_empty()
    }
}

/// The checker's answer for every node.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub nodes: Vec<NodeVerdict>,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.nodes.iter().all(NodeVerdict::is_ok)
    }

    /// Every sent event some node never ran, by node.
    pub fn missing(&self) -> BTreeMap<String, Vec<String>> {
        self.nodes
            .iter()
            .filter(|n| !n.missing.is_empty())
            .map(|n| (n.node.clone(), n.missing.clone()))
            .collect()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for n in &self.nodes {
            let mut parts = Vec::new();
            if !n.missing.is_empty() {
                let missing: Vec<&str> = n.missing.iter().map(String::as_str).collect();
                parts.push(format!("missed {}: {}", n.missing.len(), missing.join(" ")));
            }
            if !n.repeated.is_empty() {
                let list: Vec<String> =
                    n.repeated.iter().map(|(e, k)| format!("{e}×{k}")).collect();
                parts.push(format!(
                    "ran {} more than once{} ({})",
                    n.repeated.len(),
                    if n.too_many_repeats {
                        ", more than allowed"
                    } else {
                        ""
                    },
                    list.join(" ")
                ));
            }
            if !n.unexpected.is_empty() {
                parts.push(format!("ran events never sent: {}", n.unexpected.join(" ")));
            }
            if parts.is_empty() {
                writeln!(f, "{}: ok", n.node)?;
            } else {
                writeln!(f, "{}: {}", n.node, parts.join("; "))?;
            }
        }
        Ok(())
    }
}

/// The checker: for each node, its expectation and the runs counted per event, against the
/// events that were sent.
pub fn check(
    events: &[String],
    nodes: impl IntoIterator<Item = (String, Expect, BTreeMap<String, usize>)>,
) -> Verdict {
    let verdicts = nodes
        .into_iter()
        .map(|(node, expect, got)| {
            let mut v = NodeVerdict {
                node,
                ..NodeVerdict::default()
            };
            for e in events {
                match got.get(e).copied().unwrap_or(0) {
                    0 => v.missing.push(e.clone()),
                    1 => {}
                    n => {
                        v.repeated.push((e.clone(), n));
                        v.extra_runs += n - 1;
                    }
                }
            }
            v.unexpected = got
                .keys()
                .filter(|name| !events.contains(name))
                .cloned()
                .collect();
            v.too_many_repeats = match expect {
                Expect::ExactlyOnce => v.extra_runs > 0,
                Expect::AtLeastOnce { repeats } => v.extra_runs > repeats,
            };
            v
        })
        .collect();
    Verdict { nodes: verdicts }
}

/// `a, b, c` or `a, b, c ... (N in all)` for long lists.
pub fn summarize(items: &[&str]) -> String {
    if items.len() <= 8 {
        items.join(", ")
    } else {
        format!("{} ... ({} in all)", items[..8].join(", "), items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|(e, n)| (e.to_string(), *n)).collect()
    }

    #[test]
    fn the_checker_names_what_each_node_missed_repeated_or_invented() {
        let events: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let v = check(
            &events,
            [
                (
                    "n1".into(),
                    Expect::ExactlyOnce,
                    counts(&[("a", 1), ("b", 1), ("c", 1)]),
                ),
                (
                    "n2".into(),
                    Expect::ExactlyOnce,
                    counts(&[("a", 1), ("c", 2)]),
                ),
                (
                    "n3".into(),
                    Expect::AtLeastOnce { repeats: 1 },
                    counts(&[("a", 2), ("b", 1), ("c", 1), ("z", 1)]),
                ),
                (
                    "n4".into(),
                    Expect::AtLeastOnce { repeats: 1 },
                    counts(&[("a", 2), ("b", 2), ("c", 1)]),
                ),
            ],
        );
        assert!(!v.is_ok());
        assert!(v.nodes[0].is_ok());
        assert_eq!(v.nodes[1].missing, ["b"]);
        assert!(v.nodes[1].too_many_repeats);
        assert!(!v.nodes[2].too_many_repeats, "one repeat is allowed");
        assert_eq!(v.nodes[2].unexpected, ["z"]);
        assert!(v.nodes[3].too_many_repeats, "two repeats for one crash");
        assert_eq!(v.missing()["n2"], ["b"]);
        let text = v.to_string();
        assert!(text.contains("n1: ok"), "{text}");
        assert!(
            text.contains("n2: missed 1: b; ran 1 more than once, more than allowed (c×2)"),
            "{text}"
        );
    }

    #[test]
    fn records_count_lines_and_skip_warm_ups() {
        let r = Records::new();
        std::fs::write(r.path("n1"), "warm-0\nx\ny\nx\n").unwrap();
        assert_eq!(r.lines("n1"), ["x", "y", "x"]);
        assert_eq!(r.counts("n1"), counts(&[("x", 2), ("y", 1)]));
        assert!(r.counts("nobody").is_empty());
        assert!(
            r.handler()
                .starts_with("user=echo \"$SERF_USER_EVENT\" >> ")
        );
    }
}
