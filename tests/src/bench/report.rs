//! The figures the benchmark reports, small statistics, and the text and JSON output.

use serde_json::{Map, Value, json};

/// One system's figures. `None` where a figure could not be measured.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub join_s: Option<f64>,
    pub deliver_ms_p50: Option<f64>,
    pub deliver_ms_max: Option<f64>,
    pub floor_ms_max: Option<f64>,
    pub event_ms_p50: Option<f64>,
    pub event_ms_max: Option<f64>,
    pub query_ms: Option<f64>,
    pub fail_detect_s: Option<f64>,
    pub rss_mb: Option<f64>,
    pub cpu_pct_idle: Option<f64>,
    pub idle_bytes_per_node_s: Option<f64>,
    /// Detail for the text output: each round's floor, each query's time to all answers and
    /// to the CLI's exit.
    pub floor_ms_samples: Vec<f64>,
    pub query_ms_samples: Vec<f64>,
    pub query_returned_ms: Vec<f64>,
    /// Per event: until the sending agent had its own event (the CLI's start-up and call).
    pub origin_ms_samples: Vec<f64>,
    /// Per event: until the last agent received it, and until the last handler ran.
    pub deliver_ms_per_event: Vec<f64>,
    pub event_ms_per_event: Vec<f64>,
    /// (agent, event) pairs where the event never arrived, or the handler never ran, within
    /// the wait (the maxima are then `None`).
    pub deliveries_missed: usize,
    pub handler_runs_missed: usize,
    /// Median private resident memory (RssAnon), MB.
    pub rss_anon_mb: Option<f64>,
    /// Idle traffic split into UDP (gossip) and TCP (push-pull), bytes per node per second.
    pub idle_udp_tcp: Option<(f64, f64)>,
}

/// The keys, in output order, with their unit and the target for rumor.
const ROWS: [(&str, &str); 11] = [
    ("join_s", "≤ 0.5"),
    ("deliver_ms_p50", ""),
    ("deliver_ms_max", "≤ 15"),
    ("floor_ms_max", ""),
    ("event_ms_p50", ""),
    ("event_ms_max", "≤ 1.3 × floor"),
    ("query_ms", "≤ 50 + floor"),
    ("fail_detect_s", "≤ 3"),
    ("rss_mb", "≤ 5"),
    ("cpu_pct_idle", "≤ Serf"),
    ("idle_bytes_per_node_s", "≤ Serf"),
];

impl Figures {
    fn get(&self, key: &str) -> Option<f64> {
        match key {
            "join_s" => self.join_s,
            "deliver_ms_p50" => self.deliver_ms_p50,
            "deliver_ms_max" => self.deliver_ms_max,
            "floor_ms_max" => self.floor_ms_max,
            "event_ms_p50" => self.event_ms_p50,
            "event_ms_max" => self.event_ms_max,
            "query_ms" => self.query_ms,
            "fail_detect_s" => self.fail_detect_s,
            "rss_mb" => self.rss_mb,
            "cpu_pct_idle" => self.cpu_pct_idle,
            "idle_bytes_per_node_s" => self.idle_bytes_per_node_s,
            _ => None,
        }
    }

    /// Exactly the reported keys, `null` where not measured.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        for (key, _) in ROWS {
            let v = self.get(key).map(|x| (x * 1000.0).round() / 1000.0);
            map.insert(key.to_owned(), json!(v));
        }
        Value::Object(map)
    }
}

/// The JSON document: one system's keys at the top level, or `{"rumor": …, "serf": …}`.
pub fn json(results: &[(&str, Figures)]) -> Value {
    match results {
        [(_, only)] => only.to_json(),
        _ => Value::Object(
            results
                .iter()
                .map(|(label, f)| ((*label).to_owned(), f.to_json()))
                .collect(),
        ),
    }
}

/// A text table: one row per key, one column per system, then rumor's target.
pub fn text(results: &[(&str, Figures)], nodes: usize, machine: &str) -> String {
    let mut out = format!("cluster-bench: {nodes} agents on 127.0.0.1 ({machine})\n\n");
    let mut header = format!("{:<24}", "");
    for (label, _) in results {
        header.push_str(&format!("{label:>12}"));
    }
    header.push_str("   target (rumor)\n");
    out.push_str(&header);
    for (key, target) in ROWS {
        let mut line = format!("{key:<24}");
        for (_, f) in results {
            line.push_str(&match f.get(key) {
                Some(v) if v >= 100.0 => format!("{v:>12.0}"),
                Some(v) => format!("{v:>12.2}"),
                None => format!("{:>12}", "n/a"),
            });
        }
        line.push_str(&format!("   {target}\n"));
        out.push_str(&line);
    }
    for (label, f) in results {
        if f.deliveries_missed + f.handler_runs_missed > 0 {
            out.push_str(&format!(
                "\n{label}: MISSED: {} deliveries and {} handler runs (agent × event) never \
                 happened within the wait, so those maxima are n/a",
                f.deliveries_missed, f.handler_runs_missed
            ));
        }
        out.push_str(&format!(
            "\n{label}: floors {} ms; sender had its own event after {} ms; \
             each event's last delivery {} ms and last handler run {} ms; \
             queries answered by all in {} ms, CLI returned after {} ms",
            list(&f.floor_ms_samples),
            list(&f.origin_ms_samples),
            list(&f.deliver_ms_per_event),
            list(&f.event_ms_per_event),
            list(&f.query_ms_samples),
            list(&f.query_returned_ms)
        ));
        if let Some(anon) = f.rss_anon_mb {
            out.push_str(&format!(
                "; of the RSS, {anon:.1} MB private (RssAnon), the rest shared program text"
            ));
        }
        if let Some((udp, tcp)) = f.idle_udp_tcp {
            out.push_str(&format!(
                "; idle traffic {udp:.0} B/s UDP + {tcp:.0} B/s TCP per node"
            ));
        }
    }
    out.push('\n');
    out
}

fn list(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    xs.iter()
        .map(|&x| {
            if x >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `q` quantile (0–1) by nearest rank.
pub fn percentile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

pub fn median(xs: &[f64]) -> Option<f64> {
    percentile(xs, 0.5)
}

pub fn max(xs: &[f64]) -> Option<f64> {
    xs.iter().copied().max_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let xs = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(median(&xs), Some(3.0));
        assert_eq!(max(&xs), Some(5.0));
        assert_eq!(percentile(&xs, 1.0), Some(5.0));
        assert_eq!(percentile(&xs, 0.0), Some(1.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn json_has_exactly_the_keys() {
        let f = Figures {
            join_s: Some(0.123_456),
            ..Figures::default()
        };
        let v = json(&[("rumor", f.clone())]);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 11);
        assert_eq!(v["join_s"], json!(0.123));
        assert!(v["rss_mb"].is_null());
        let both = json(&[("rumor", f.clone()), ("serf", f)]);
        assert_eq!(both["serf"]["join_s"], json!(0.123));
    }
}
