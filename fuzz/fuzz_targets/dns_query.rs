//! The DNS interface's packet path (`rumor::dns::respond`): any bytes, over UDP or TCP, give a
//! reply or are dropped and counted, never a panic; a reply over UDP fits the size allowed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rumor::cluster::{MemberView, Status};
use rumor::dns::{DnsConfig, DnsSettings, DnsStats, MAX_UDP_ANSWER, Transport, Zone, respond};

fn world() -> &'static (Zone, DnsSettings) {
    static WORLD: OnceLock<(Zone, DnsSettings)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let members: Vec<MemberView> = (0..60)
            .map(|i| {
                let addr = if i % 2 == 0 {
                    format!("10.0.0.{i}").parse().unwrap()
                } else {
                    format!("2001:db8::{i}").parse().unwrap()
                };
                let dc = if i % 3 == 0 { "eu" } else { "us" };
                let tags = [("role", "web"), ("port", "80"), ("dc", dc)];
                MemberView::with_defaults(&format!("n{i}"), addr, Status::Alive, &tags)
            })
            .collect();
        let config = DnsConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            domain: "rumor".into(),
            ttl: std::time::Duration::ZERO,
            soa_min_ttl: std::time::Duration::ZERO,
            reverse: true,
        };
        (
            Zone::build(&members),
            DnsSettings::new(&config, "n0").unwrap(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (zone, settings) = world();
    let stats = DnsStats::default();
    if let Some(reply) = respond(zone, settings, data, Transport::Udp, &stats) {
        assert!(
            reply.len() <= usize::from(MAX_UDP_ANSWER),
            "a UDP reply of {} bytes",
            reply.len()
        );
    }
    let _ = respond(zone, settings, data, Transport::Tcp, &stats);
});
