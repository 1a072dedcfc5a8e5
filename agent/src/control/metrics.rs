//! `GET /metrics`: the agent's counters in the Prometheus text exposition format (0.0.4).
//!
//! [`render`] is a pure function of what `GET /v1/info` reports (the cluster's member counts
//! and counters, the handler dispatcher's status), so the format is tested without a server.

use std::fmt::Write as _;

use rumor_handlers::{HandlerStatus, RuntimeDetails, TemplateStatus, WasmStatus};

use crate::health::{CheckStatus, State};
use crate::plugin::PluginStatus;
use crate::reload::ReloadStatus;

use super::api::ConnectionsSummary;
use crate::cluster::ClusterInfo;
use crate::cluster::latency::BUCKETS_MS;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the metrics are computed from.
pub struct MetricInputs<'a> {
    pub version: &'a str,
    pub cluster: &'a ClusterInfo,
    pub handlers: &'a [HandlerStatus],
    /// Requests the control API refused for a missing or wrong token.
    pub control_unauthorized: u64,
    /// Incoming connections: held now, and dropped by the limits.
    pub connections: &'a ConnectionsSummary,
    pub plugins: &'a [PluginStatus],
    pub reload: &'a ReloadStatus,
    /// The DNS server's counters, when it runs (`--dns`).
    pub dns: Option<&'a crate::dns::DnsStats>,
    /// The health checks, by name.
    pub checks: &'a [CheckStatus],
}

/// Renders every metric family, each with its `# HELP` and `# TYPE` lines.
pub fn render(s: &MetricInputs<'_>) -> String {
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
        "User events: received (each copy), duplicate (a copy of one delivered), lost (never \
         to arrive: a peer had moved past them and no longer kept them).",
    );
    for (result, count) in [
        ("received", n.events_received),
        ("duplicate", n.events_duplicate),
        ("lost", n.events_lost),
    ] {
        out.sample("rumor_events_total", &[("result", result)], count);
    }
    out.family(
        "rumor_events_kept",
        "gauge",
        "User events this agent keeps for members that missed them.",
    );
    out.sample("rumor_events_kept", &[], c.events_kept as u64);
    out.family(
        "rumor_queries_refused_total",
        "counter",
        "Queries refused: past their deadline, sent before this agent started, or waiting \
         longer than any query may (replay protection).",
    );
    out.sample("rumor_queries_refused_total", &[], n.queries_refused);

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
    let handler_families: [(&str, &str, &str, Field); 6] = [
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
            "rumor_handler_start_failures_total",
            "counter",
            "Attempts at a handler run that could not start (nothing ran; tried again with a \
             backoff, and never recorded as handled).",
            |h| h.start_failures,
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

    templates(&mut out, s.handlers);
    wasm(&mut out, s.handlers);
    out.family(
        "rumor_reloads_total",
        "counter",
        "Reloads of the config file and the plugins (SIGHUP, rumor reload, plugin commands, \
         changes on disk), by outcome: failed = something did not load and kept its last good \
         version.",
    );
    out.sample(
        "rumor_reloads_total",
        &[("result", "ok")],
        s.reload.reloads - s.reload.failures.min(s.reload.reloads),
    );
    out.sample(
        "rumor_reloads_total",
        &[("result", "failed")],
        s.reload.failures,
    );
    out.family(
        "rumor_plugins",
        "gauge",
        "Installed plugins: ok = loaded, broken = its last load failed (its last good version, \
         if any, keeps running).",
    );
    let broken = s.plugins.iter().filter(|p| p.error.is_some()).count();
    out.sample(
        "rumor_plugins",
        &[("state", "ok")],
        s.plugins.len() - broken,
    );
    out.sample("rumor_plugins", &[("state", "broken")], broken);

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
    connections(&mut out, s.connections);
    checks(&mut out, s.checks);

    if let Some(dns) = s.dns {
        dns.render(&mut out);
    }
    out.text
}

/// The push-pull port's and the control listeners' connections.
fn connections(out: &mut Exposition, c: &ConnectionsSummary) {
    let p = &c.push_pull;
    out.family(
        "rumor_push_pull_unauthenticated",
        "gauge",
        "Incoming push-pull connections waiting for their first valid frame.",
    );
    out.sample("rumor_push_pull_unauthenticated", &[], p.unauthenticated);
    out.family(
        "rumor_push_pull_unauthenticated_bytes",
        "gauge",
        "Bytes that push-pull frames not yet authenticated hold beyond their free allowance \
         (bounded by the agent's budget).",
    );
    out.sample(
        "rumor_push_pull_unauthenticated_bytes",
        &[],
        p.unauthenticated_bytes,
    );
    out.family(
        "rumor_push_pull_dropped_total",
        "counter",
        "Incoming push-pull connections dropped before an exchange: evicted = silent the \
         longest when the unauthenticated ones were at their cap, idle = silent too long, \
         no_valid_frame = no valid frame in time, over_budget = a frame past the budget of \
         unauthenticated bytes, malformed = not a push-pull frame.",
    );
    for (reason, count) in [
        ("evicted", p.evicted),
        ("idle", p.idle),
        ("no_valid_frame", p.no_valid_frame),
        ("over_budget", p.over_budget),
        ("malformed", p.malformed),
    ] {
        out.sample(
            "rumor_push_pull_dropped_total",
            &[("reason", reason)],
            count,
        );
    }

    let listeners = [("api", &c.control.api), ("metrics", &c.control.metrics)];
    out.family(
        "rumor_control_connections",
        "gauge",
        "Connections open on the control API's listener and on the metrics listener.",
    );
    for (listener, counts) in listeners {
        out.sample(
            "rumor_control_connections",
            &[("listener", listener)],
            counts.open,
        );
    }
    out.family(
        "rumor_control_connections_dropped_total",
        "counter",
        "Connections a control listener closed for its limits: evicted = idle the longest when \
         the listener was full, full = every connection busy, descriptors = too few file \
         descriptors free.",
    );
    for (listener, counts) in listeners {
        for (reason, count) in [
            ("evicted", counts.evicted),
            ("full", counts.refused_full),
            ("descriptors", counts.refused_descriptors),
        ] {
            out.sample(
                "rumor_control_connections_dropped_total",
                &[("listener", listener), ("reason", reason)],
                count,
            );
        }
    }
}

/// The template handlers' counters.
fn templates(out: &mut Exposition, handlers: &[HandlerStatus]) {
    let templates: Vec<(&str, &TemplateStatus)> = handlers
        .iter()
        .filter_map(|h| match &h.runtime {
            Some(RuntimeDetails::Template(t)) => Some((h.name.as_str(), t)),
            _ => None,
        })
        .collect();
    type Field = fn(&TemplateStatus) -> u64;
    let families: [(&str, &str, Field); 4] = [
        (
            "rumor_template_renders_total",
            "Renders of a template handler (runs that found their file up to date excluded).",
            |t| t.renders,
        ),
        (
            "rumor_template_writes_total",
            "Renders that replaced the template's file.",
            |t| t.written,
        ),
        (
            "rumor_template_render_failures_total",
            "Renders that failed (template error, unwritable file); the live file was kept.",
            |t| t.render_failures,
        ),
        (
            "rumor_template_check_failures_total",
            "New files the template's check command refused; the live file was kept.",
            |t| t.check_failures,
        ),
    ];
    for (name, help, field) in families {
        out.family(name, "counter", help);
        for (handler, t) in &templates {
            out.sample(name, &[("handler", handler)], field(t));
        }
    }
    out.family(
        "rumor_template_reloads_total",
        "counter",
        "Reload commands run after a template's file changed, by outcome.",
    );
    for (handler, t) in &templates {
        out.sample(
            "rumor_template_reloads_total",
            &[("handler", handler), ("result", "ok")],
            t.reloads,
        );
        out.sample(
            "rumor_template_reloads_total",
            &[("handler", handler), ("result", "failed")],
            t.reload_failures,
        );
    }
}

/// The WASM handlers' compiles and the runs each limit stopped.
fn wasm(out: &mut Exposition, handlers: &[HandlerStatus]) {
    let modules: Vec<(&str, &WasmStatus)> = handlers
        .iter()
        .filter_map(|h| match &h.runtime {
            Some(RuntimeDetails::Wasm(w)) => Some((h.name.as_str(), w)),
            _ => None,
        })
        .collect();
    out.family(
        "rumor_wasm_compiles_total",
        "counter",
        "Compiles of a WASM handler's module: its first run, and the first after each change of \
         its file.",
    );
    for (handler, w) in &modules {
        out.sample(
            "rumor_wasm_compiles_total",
            &[("handler", handler)],
            w.compiles,
        );
    }
    out.family(
        "rumor_wasm_limit_stops_total",
        "counter",
        "WASM handler runs stopped by a limit: fuel (out of fuel), memory (memory limit), \
         output (output over the limit), time (timed out).",
    );
    for (handler, w) in &modules {
        for (limit, count) in [
            ("fuel", w.out_of_fuel),
            ("memory", w.memory_limit),
            ("output", w.output_limit),
            ("time", w.timed_out),
        ] {
            out.sample(
                "rumor_wasm_limit_stops_total",
                &[("handler", handler), ("limit", limit)],
                count,
            );
        }
    }
}

/// Each health check's state and changes of state.
fn checks(out: &mut Exposition, checks: &[CheckStatus]) {
    out.family(
        "rumor_check_state",
        "gauge",
        "1 for the state each health check publishes now (its tag health_NAME), 0 for the others.",
    );
    for c in checks {
        for state in [State::Passing, State::Warning, State::Critical] {
            out.sample(
                "rumor_check_state",
                &[("check", &c.name), ("state", state.as_str())],
                u8::from(c.state == state),
            );
        }
    }
    out.family(
        "rumor_check_transitions_total",
        "counter",
        "Changes of state of each health check since it started (its first result included).",
    );
    for c in checks {
        out.sample(
            "rumor_check_transitions_total",
            &[("check", &c.name)],
            c.transitions,
        );
    }
}

/// A text exposition being written: a family's `# HELP`/`# TYPE`, then its samples.
#[derive(Default)]
pub(crate) struct Exposition {
    text: String,
}

impl Exposition {
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
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
    use crate::cluster::Counters;

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
            events_kept: 40,
            event_retention: 1024,
            event_retention_secs: 3600,
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
                events_lost: 2,
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
                queries_refused: 0,
            },
        }
    }

    fn connections_sample() -> ConnectionsSummary {
        let mut c = ConnectionsSummary::default();
        c.push_pull.unauthenticated = 3;
        c.push_pull.evicted = 40;
        c.push_pull.over_budget = 2;
        c.control.metrics.open = 128;
        c.control.metrics.evicted = 972;
        c.control.api.refused_descriptors = 5;
        c
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
            start_failures: 5,
            queued: 3,
            running: false,
            last: None,
            runtime: None,
        }
    }

    #[test]
    fn every_family_has_help_and_type_then_its_samples() {
        let cluster = cluster();
        let handlers = [handler("deploy")];
        let text = render(&MetricInputs {
            version: "0.1.0",
            cluster: &cluster,
            handlers: &handlers,
            plugins: &[],
            reload: &ReloadStatus::default(),
            dns: None,
            checks: &[],
            control_unauthorized: 6,
            connections: &connections_sample(),
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
             rumor_events_total{result=\"lost\"} 2\n",
            "rumor_push_pull_total{result=\"ok\"} 12\nrumor_push_pull_total{result=\"failed\"} 3\n\
             rumor_push_pull_total{result=\"rate_limited\"} 7\n",
            "# TYPE rumor_handler_runs_total counter\nrumor_handler_runs_total{handler=\"deploy\"} 4\n",
            "rumor_handler_failures_total{handler=\"deploy\"} 1\n",
            "rumor_handler_timeouts_total{handler=\"deploy\"} 1\n",
            "rumor_handler_dropped_total{handler=\"deploy\"} 2\n",
            "rumor_handler_start_failures_total{handler=\"deploy\"} 5\n",
            "# TYPE rumor_handler_queued gauge\nrumor_handler_queued{handler=\"deploy\"} 3\n",
            "# TYPE rumor_control_unauthorized_total counter\nrumor_control_unauthorized_total 6\n",
            "rumor_event_dissemination_seconds_bucket{le=\"0.005\"} 1\n",
            "rumor_event_dissemination_seconds_bucket{le=\"+Inf\"} 2\n",
            "rumor_event_dissemination_seconds_sum 0.253\n",
            "rumor_event_dissemination_seconds_count 2\n",
            "# TYPE rumor_push_pull_unauthenticated gauge\nrumor_push_pull_unauthenticated 3\n",
            "rumor_push_pull_dropped_total{reason=\"evicted\"} 40\n",
            "rumor_push_pull_dropped_total{reason=\"over_budget\"} 2\n",
            "rumor_control_connections{listener=\"metrics\"} 128\n",
            "rumor_control_connections_dropped_total{listener=\"metrics\",reason=\"evicted\"} 972\n",
            "rumor_control_connections_dropped_total{listener=\"api\",reason=\"descriptors\"} 5\n",
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
        let text = render(&MetricInputs {
            version: "0.1.0",
            cluster: &cluster,
            handlers: &handlers,
            plugins: &[],
            reload: &ReloadStatus::default(),
            dns: None,
            checks: &[],
            control_unauthorized: 0,
            connections: &ConnectionsSummary::default(),
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
        let text = render(&MetricInputs {
            version: "0.1.0",
            cluster: &cluster,
            handlers: &[],
            plugins: &[],
            reload: &ReloadStatus::default(),
            dns: None,
            checks: &[],
            control_unauthorized: 0,
            connections: &ConnectionsSummary::default(),
        });
        assert!(text.contains(
            "# TYPE rumor_handler_runs_total counter\n# HELP rumor_handler_failures_total"
        ));
        assert!(!text.contains("handler=\""));
    }
}
