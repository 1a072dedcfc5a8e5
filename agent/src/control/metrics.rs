//! `GET /metrics`: the agent's counters in the Prometheus text exposition format (0.0.4).
//!
//! [`render`] is a pure function of what `GET /v1/info` reports (the cluster's member counts
//! and counters, the handler dispatcher's status), so the format is tested without a server.

use std::fmt::Write as _;

use rumor_handlers::HandlerStatus;

use crate::cluster::ClusterInfo;
use crate::cluster::latency::BUCKETS_MS;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the metrics are computed from.
pub struct Snapshot<'a> {
    pub version: &'a str,
    pub cluster: &'a ClusterInfo,
    pub handlers: &'a [HandlerStatus],
    /// Requests the control API refused for a missing or wrong token.
    pub control_unauthorized: u64,
}

/// Renders every metric family, each with its `# HELP` and `# TYPE` lines.
pub fn render(s: &Snapshot<'_>) -> String {
    let c = s.cluster;
    let n = &c.counters;
    let mut out = Exposition::default();

    out.family("rumor_up", "gauge", "1 while the agent is running.");
    out.sample("rumor_up", &[], 1);
    out.family(
        "rumor_info",
        "gauge",
        "Always 1; the labels name this node and the rumor version.",
    );
    out.sample(
        "rumor_info",
        &[("node", &c.node), ("version", s.version)],
        1,
    );

    out.family(
        "rumor_members",
        "gauge",
        "Members in this agent's member list, by status.",
    );
    for (status, count) in [
        ("alive", c.members_alive),
        ("leaving", c.members_leaving),
        ("left", c.members_left),
        ("failed", c.members_failed),
    ] {
        out.sample("rumor_members", &[("status", status)], count as u64);
    }

    out.family(
        "rumor_event_clock",
        "gauge",
        "This node's user event Lamport clock.",
    );
    out.sample("rumor_event_clock", &[], c.event_clock);

    out.family(
        "rumor_packets_total",
        "counter",
        "Gossip packets (UDP datagrams) received and sent.",
    );
    out.sample(
        "rumor_packets_total",
        &[("direction", "received")],
        n.packets_received,
    );
    out.sample(
        "rumor_packets_total",
        &[("direction", "sent")],
        n.packets_sent,
    );

    out.family(
        "rumor_packets_dropped_total",
        "counter",
        "Received packets dropped: rejected = bad envelope (magic, version, length), \
         undecryptable = failed the encryption check (tampered, unknown key, plain vs sealed), \
         invalid = refused by the membership protocol (foca).",
    );
    out.sample(
        "rumor_packets_dropped_total",
        &[("reason", "rejected")],
        n.packets_rejected,
    );
    out.sample(
        "rumor_packets_dropped_total",
        &[("reason", "undecryptable")],
        n.packets_undecryptable,
    );
    out.sample(
        "rumor_packets_dropped_total",
        &[("reason", "invalid")],
        n.packets_invalid,
    );

    out.family(
        "rumor_events_total",
        "counter",
        "User events received: new (received), already seen (duplicate), or older than the \
         deduplication window (too_old).",
    );
    for (result, count) in [
        ("received", n.events_received),
        ("duplicate", n.events_duplicate),
        ("too_old", n.events_too_old),
    ] {
        out.sample("rumor_events_total", &[("result", result)], count);
    }

    out.family(
        "rumor_push_pull_total",
        "counter",
        "Full state exchanges (push-pull) with a peer, by outcome.",
    );
    out.sample("rumor_push_pull_total", &[("result", "ok")], n.push_pull_ok);
    out.sample(
        "rumor_push_pull_total",
        &[("result", "failed")],
        n.push_pull_failed,
    );
    out.sample(
        "rumor_push_pull_total",
        &[("result", "rate_limited")],
        n.push_pull_rate_limited,
    );
    out.family(
        "rumor_push_pull_in_sync_total",
        "counter",
        "Successful push-pulls (of those counted as ok) whose digests matched, so no state \
         crossed.",
    );
    out.sample("rumor_push_pull_in_sync_total", &[], n.push_pull_in_sync);

    out.family(
        "rumor_query_reasks_total",
        "counter",
        "Queries of this node sent again straight to a node that had not answered yet (one per \
         node and try).",
    );
    out.sample("rumor_query_reasks_total", &[], n.query_reasks);
    out.family(
        "rumor_probes_failed_total",
        "counter",
        "Probes of this node that no member answered, directly or indirectly (each makes the \
         member suspect until it refutes or is declared failed).",
    );
    out.sample("rumor_probes_failed_total", &[], n.probes_failed);
    out.family(
        "rumor_packets_refused_total",
        "counter",
        "Packets to a member that its host refused with ICMP port unreachable (its agent is \
         gone; each refusal is reported as a failed probe).",
    );
    out.sample("rumor_packets_refused_total", &[], n.packets_refused);
    out.family(
        "rumor_suspicions_confirmed_total",
        "counter",
        "Members this node declared failed because several members independently could not \
         reach them (before the suspicion timeout).",
    );
    out.sample(
        "rumor_suspicions_confirmed_total",
        &[],
        n.suspicions_confirmed,
    );
    out.family(
        "rumor_tree_duplicates_total",
        "counter",
        "Copies of a user event or query received after the first (each turns a link of the \
         broadcast tree lazy; steady growth after the first events means churn).",
    );
    out.sample("rumor_tree_duplicates_total", &[], n.tree_duplicates);
    out.family(
        "rumor_tree_grafts_total",
        "counter",
        "User events and queries this node asked a peer for after only their announcement \
         arrived (a lost packet or a dead parent in the broadcast tree).",
    );
    out.sample("rumor_tree_grafts_total", &[], n.tree_grafts);

    let latency = &c.event_latency;
    out.family(
        "rumor_event_dissemination_seconds",
        "histogram",
        "Time from a user event's send (on its origin's clock) to its first receipt here, for \
         events that arrived by gossip.",
    );
    for (i, bound) in BUCKETS_MS.iter().enumerate() {
        let le = format!("{}", *bound as f64 / 1000.0);
        out.sample(
            "rumor_event_dissemination_seconds_bucket",
            &[("le", le.as_str())],
            latency.counts.get(i).copied().unwrap_or(0),
        );
    }
    out.sample(
        "rumor_event_dissemination_seconds_bucket",
        &[("le", "+Inf")],
        latency.count,
    );
    out.sample(
        "rumor_event_dissemination_seconds_sum",
        &[],
        latency.sum_ms as f64 / 1000.0,
    );
    out.sample(
        "rumor_event_dissemination_seconds_count",
        &[],
        latency.count,
    );

    type Field = fn(&HandlerStatus) -> u64;
    let handler_families: [(&str, &str, &str, Field); 5] = [
        (
            "rumor_handler_runs_total",
            "counter",
            "Handler runs finished.",
            |h| h.runs,
        ),
        (
            "rumor_handler_failures_total",
            "counter",
            "Handler runs that did not exit 0 (timeouts included).",
            |h| h.failures,
        ),
        (
            "rumor_handler_timeouts_total",
            "counter",
            "Handler runs killed at their timeout.",
            |h| h.timeouts,
        ),
        (
            "rumor_handler_dropped_total",
            "counter",
            "Events dropped because the handler's queue was full.",
            |h| h.dropped,
        ),
        (
            "rumor_handler_queued",
            "gauge",
            "Events waiting in the handler's queue.",
            |h| h.queued as u64,
        ),
    ];
    for (name, kind, help, field) in handler_families {
        out.family(name, kind, help);
        for h in s.handlers {
            out.sample(name, &[("handler", &h.name)], field(h));
        }
    }

    out.family(
        "rumor_control_unauthorized_total",
        "counter",
        "Control API requests refused for a missing or wrong token.",
    );
    out.sample(
        "rumor_control_unauthorized_total",
        &[],
        s.control_unauthorized,
    );

    out.text
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value: backslash, double quote and line feed are escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text: backslash and line feed are escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::handle::Counters;

    fn cluster() -> ClusterInfo {
        ClusterInfo {
            node: "web-1".into(),
            advertise: "10.0.0.5:7946".parse().unwrap(),
            generation: 3,
            connected: true,
            members_alive: 5,
            members_leaving: 1,
            members_left: 2,
            members_failed: 0,
            event_clock: 17,
            max_event_bytes: 1024,
            profile: "lan".into(),
            name_conflicts: vec![],
            event_latency: {
                let mut h = crate::cluster::latency::LatencyHistogram::default();
                h.observe(3);
                h.observe(250);
                h
            },
            counters: Counters {
                packets_received: 1200,
                packets_sent: 1180,
                packets_rejected: 4,
                packets_invalid: 1,
                packets_undecryptable: 6,
                events_received: 9,
                events_duplicate: 14,
                events_too_old: 2,
                push_pull_ok: 12,
                push_pull_in_sync: 8,
                push_pull_failed: 3,
                push_pull_rate_limited: 7,
                query_reasks: 2,
                probes_failed: 5,
                packets_refused: 13,
                suspicions_confirmed: 1,
                tree_duplicates: 11,
                tree_grafts: 3,
            },
        }
    }

    fn handler(name: &str) -> HandlerStatus {
        HandlerStatus {
            name: name.into(),
            filter: "user:deploy".into(),
            command: "true".into(),
            runs: 4,
            failures: 1,
            timeouts: 1,
            dropped: 2,
            queued: 3,
            running: false,
            last: None,
        }
    }

    #[test]
    fn every_family_has_help_and_type_then_its_samples() {
        let cluster = cluster();
        let handlers = [handler("deploy")];
        let text = render(&Snapshot {
            version: "0.1.0",
            cluster: &cluster,
            handlers: &handlers,
            control_unauthorized: 6,
        });
        for expected in [
            "# HELP rumor_up 1 while the agent is running.\n# TYPE rumor_up gauge\nrumor_up 1\n",
            "rumor_info{node=\"web-1\",version=\"0.1.0\"} 1\n",
            "# TYPE rumor_members gauge\nrumor_members{status=\"alive\"} 5\n\
             rumor_members{status=\"leaving\"} 1\nrumor_members{status=\"left\"} 2\n\
             rumor_members{status=\"failed\"} 0\n",
            "# TYPE rumor_event_clock gauge\nrumor_event_clock 17\n",
            "# TYPE rumor_packets_total counter\nrumor_packets_total{direction=\"received\"} 1200\n\
             rumor_packets_total{direction=\"sent\"} 1180\n",
            "rumor_packets_dropped_total{reason=\"rejected\"} 4\n\
             rumor_packets_dropped_total{reason=\"undecryptable\"} 6\n\
             rumor_packets_dropped_total{reason=\"invalid\"} 1\n",
            "rumor_events_total{result=\"received\"} 9\nrumor_events_total{result=\"duplicate\"} 14\n\
             rumor_events_total{result=\"too_old\"} 2\n",
            "rumor_push_pull_total{result=\"ok\"} 12\nrumor_push_pull_total{result=\"failed\"} 3\n\
             rumor_push_pull_total{result=\"rate_limited\"} 7\n",
            "# TYPE rumor_handler_runs_total counter\nrumor_handler_runs_total{handler=\"deploy\"} 4\n",
            "rumor_handler_failures_total{handler=\"deploy\"} 1\n",
            "rumor_handler_timeouts_total{handler=\"deploy\"} 1\n",
            "rumor_handler_dropped_total{handler=\"deploy\"} 2\n",
            "# TYPE rumor_handler_queued gauge\nrumor_handler_queued{handler=\"deploy\"} 3\n",
            "# TYPE rumor_control_unauthorized_total counter\nrumor_control_unauthorized_total 6\n",
            "rumor_event_dissemination_seconds_bucket{le=\"0.005\"} 1\n",
            "rumor_event_dissemination_seconds_bucket{le=\"+Inf\"} 2\n",
            "rumor_event_dissemination_seconds_sum 0.253\n",
            "rumor_event_dissemination_seconds_count 2\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }

        // The exposition format's grammar, line by line: comments are HELP or TYPE, the TYPE of
        // a family comes right after its HELP and before its samples, every sample belongs to
        // the last family declared, and values are integers.
        let mut family = String::new();
        let mut declared = std::collections::BTreeSet::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                let next = lines.next().unwrap();
                assert!(next.starts_with(&format!("# TYPE {name} ")), "{next}");
                let kind = next.rsplit(' ').next().unwrap();
                assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{next}");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{name}");
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                family = name.to_string();
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            let name = series.split('{').next().unwrap();
            // A histogram's series are NAME_bucket, NAME_sum (in seconds) and NAME_count.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| *b == family))
                .unwrap_or(name);
            if name.ends_with("_sum") && base != name {
                value.parse::<f64>().unwrap();
            } else {
                value.parse::<u64>().unwrap();
            }
            assert_eq!(base, family, "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let cluster = cluster();
        let handlers = [handler("say \"hi\"\\\nbye")];
        let text = render(&Snapshot {
            version: "0.1.0",
            cluster: &cluster,
            handlers: &handlers,
            control_unauthorized: 0,
        });
        assert!(
            text.contains("rumor_handler_runs_total{handler=\"say \\\"hi\\\"\\\\\\nbye\"} 4\n"),
            "{text}"
        );
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_help("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
    }

    #[test]
    fn no_handlers_means_families_without_samples() {
        let cluster = cluster();
        let text = render(&Snapshot {
            version: "0.1.0",
            cluster: &cluster,
            handlers: &[],
            control_unauthorized: 0,
        });
        assert!(text.contains(
            "# TYPE rumor_handler_runs_total counter\n# HELP rumor_handler_failures_total"
        ));
        assert!(!text.contains("handler=\""));
    }
}
