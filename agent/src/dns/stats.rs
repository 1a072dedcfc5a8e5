//! What the DNS server counts, for `GET /metrics`: queries by transport, answers by response
//! code, truncated answers, packets dropped as malformed, and how many members it answers for.
//! Plain atomics: the server bumps them on every query and must not wait for a reader.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::control::metrics::Exposition;

/// The DNS server's counters.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub queries_udp: AtomicU64,
    pub queries_tcp: AtomicU64,
    pub noerror: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
    /// FORMERR, NOTIMP, SERVFAIL and BADVERS answers.
    pub other: AtomicU64,
    /// UDP answers cut to fit and sent with the TC bit.
    pub truncated: AtomicU64,
    /// Packets that were not a DNS query (undecodable, or a response): dropped unanswered.
    pub malformed: AtomicU64,
    /// TCP connections closed at once because the server held its maximum.
    pub tcp_refused: AtomicU64,
    /// Members the published zone answers for.
    pub members: AtomicU64,
}

impl DnsStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the DNS metric families to `out`.
    pub(crate) fn render(&self, out: &mut Exposition) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        out.family(
            "rumor_dns_queries_total",
            "counter",
            "DNS queries answered, by transport.",
        );
        out.sample(
            "rumor_dns_queries_total",
            &[("transport", "udp")],
            get(&self.queries_udp),
        );
        out.sample(
            "rumor_dns_queries_total",
            &[("transport", "tcp")],
            get(&self.queries_tcp),
        );
        out.family(
            "rumor_dns_responses_total",
            "counter",
            "DNS answers sent, by response code (other: FORMERR, NOTIMP, SERVFAIL, BADVERS).",
        );
        for (rcode, counter) in [
            ("noerror", &self.noerror),
            ("nxdomain", &self.nxdomain),
            ("refused", &self.refused),
            ("other", &self.other),
        ] {
            out.sample(
                "rumor_dns_responses_total",
                &[("rcode", rcode)],
                get(counter),
            );
        }
        for (name, help, counter) in [
            (
                "rumor_dns_truncated_total",
                "UDP answers cut to the client's size and sent with the TC bit.",
                &self.truncated,
            ),
            (
                "rumor_dns_malformed_total",
                "Packets that were not a DNS query, dropped unanswered.",
                &self.malformed,
            ),
            (
                "rumor_dns_tcp_refused_total",
                "DNS TCP connections closed at once: the server held its maximum.",
                &self.tcp_refused,
            ),
        ] {
            out.family(name, "counter", help);
            out.sample(name, &[], get(counter));
        }
        out.family(
            "rumor_dns_members",
            "gauge",
            "Members DNS answers for (alive, every health check passing).",
        );
        out.sample("rumor_dns_members", &[], get(&self.members));
    }
}
