//! The DNS server in-process: a real server on 127.0.0.1 answering from a member list the test
//! publishes, asked with hickory's client (UDP and TCP) and with raw packets where the test
//! needs to see the wire (the TC bit, garbage).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hickory_server::net::client::{Client, ClientHandle};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::net::tcp::TcpClientStream;
use hickory_server::net::udp::UdpClientStream;
use hickory_server::proto::op::{Edns, Message, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

use super::{DnsConfig, DnsServer, start};
use crate::cluster::{MemberList, MemberView, Status};

fn member(name: &str, ip: &str, status: Status, tags: &[(&str, &str)]) -> MemberView {
    MemberView::with_defaults(name, ip.parse().unwrap(), status, tags)
}

/// alpha and beta serve web (in two data centres), gamma is a web host failing its check,
/// delta failed, epsilon has an IPv6 address.
fn cluster() -> Vec<MemberView> {
    vec![
        member(
            "alpha",
            "10.0.0.1",
            Status::Alive,
            &[("role", "web"), ("dc", "eu-west"), ("http_port", "8080")],
        ),
        member(
            "beta",
            "10.0.0.2",
            Status::Alive,
            &[("role", "web"), ("dc", "us"), ("port", "9090")],
        ),
        member(
            "gamma",
            "10.0.0.3",
            Status::Alive,
            &[("role", "web"), ("health_http", "critical")],
        ),
        member("delta", "10.0.0.4", Status::Failed, &[("role", "web")]),
        member("epsilon", "2001:db8::5", Status::Alive, &[("role", "db")]),
    ]
}

async fn serve(list: Vec<MemberView>) -> (DnsServer, watch::Sender<MemberList>) {
    let (tx, rx) = watch::channel(MemberList::new(list));
    let config = DnsConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        domain: "rumor".into(),
        ttl: Duration::from_secs(0),
        soa_min_ttl: Duration::from_secs(30),
        reverse: true,
    };
    let server = start(&config, "alpha", rx).await.unwrap();
    // The zone is built by a task of its own: wait until it holds the first list.
    while server.stats.members.load(Ordering::Relaxed) == 0 {
        tokio::task::yield_now().await;
    }
    (server, tx)
}

async fn udp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let (future, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::new());
    let (client, bg) = Client::<TokioRuntimeProvider>::new(future.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

async fn ask(client: &mut Client<TokioRuntimeProvider>, name: &str, qtype: RecordType) -> Message {
    let response = client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, qtype)
        .await
        .unwrap_or_else(|e| panic!("{name} {qtype}: {e}"));
    response.into_message()
}

/// The answer section as text, sorted: `10.0.0.1`, `1 1 8080 alpha.node.rumor.`.
fn answers(m: &Message) -> Vec<String> {
    let mut out: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    out.sort();
    out
}

#[tokio::test]
async fn names_answer_for_passing_members_only() {
    let (server, _list) = serve(cluster()).await;
    let mut c = udp_client(server.addr()).await;

    let a = ask(&mut c, "alpha.node.rumor.", RecordType::A).await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(answers(&a), ["10.0.0.1"]);
    let txt = ask(&mut c, "ALPHA.node.rumor.", RecordType::TXT).await;
    let [record] = txt.answers.as_slice() else {
        panic!("one TXT record expected: {txt:?}")
    };
    let RData::TXT(strings) = &record.data else {
        panic!("not a TXT record: {record:?}")
    };
    let strings: Vec<String> = strings
        .txt_data
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    assert_eq!(strings, ["dc=eu-west", "http_port=8080", "role=web"]);
    let v6 = ask(&mut c, "epsilon.node.rumor.", RecordType::AAAA).await;
    assert_eq!(answers(&v6), ["2001:db8::5"]);

    // gamma fails a check and delta failed: neither is a web host to DNS.
    let web = ask(&mut c, "web.role.tag.rumor.", RecordType::A).await;
    assert_eq!(answers(&web), ["10.0.0.1", "10.0.0.2"]);
    let both = ask(&mut c, "web.role.eu-west.dc.tag.rumor.", RecordType::A).await;
    assert_eq!(answers(&both), ["10.0.0.1"]);
    for gone in ["gamma.node.rumor.", "delta.node.rumor."] {
        let m = ask(&mut c, gone, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{gone}");
    }
}

#[tokio::test]
async fn srv_uses_the_service_port_tag_then_port_with_addresses_in_additional() {
    let (server, _list) = serve(cluster()).await;
    let mut c = tcp_client(server.addr()).await;
    let srv = ask(&mut c, "_http._tcp.web.role.tag.rumor.", RecordType::SRV).await;
    assert_eq!(
        answers(&srv),
        ["1 1 8080 alpha.node.rumor.", "1 1 9090 beta.node.rumor."]
    );
    let mut extra: Vec<String> = srv
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        ["alpha.node.rumor. 10.0.0.1", "beta.node.rumor. 10.0.0.2"]
    );
}

#[tokio::test]
async fn unknown_names_get_nxdomain_with_the_soa_and_other_zones_refused() {
    let (server, _list) = serve(cluster()).await;
    let mut c = udp_client(server.addr()).await;
    let nx = ask(&mut c, "nobody.node.rumor.", RecordType::A).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let [soa] = nx.authorities.as_slice() else {
        panic!("one SOA expected: {nx:?}")
    };
    let RData::SOA(data) = &soa.data else {
        panic!("not an SOA: {soa:?}")
    };
    assert_eq!(soa.name.to_string(), "rumor.");
    assert_eq!(data.minimum, 30);
    assert_eq!(soa.ttl, 30);
    // A name on the way to real ones exists: NODATA, not NXDOMAIN.
    let ent = ask(&mut c, "role.tag.rumor.", RecordType::A).await;
    assert_eq!(ent.metadata.response_code, ResponseCode::NoError);
    assert!(ent.answers.is_empty());
    let other = ask(&mut c, "example.com.", RecordType::A).await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
    assert!(!other.metadata.authoritative);
    let ptr = ask(&mut c, "2.0.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(answers(&ptr), ["beta.node.rumor."]);
}

#[tokio::test]
async fn a_new_member_list_changes_the_next_answer() {
    let (server, list) = serve(cluster()).await;
    let mut c = udp_client(server.addr()).await;
    let mut changed = cluster();
    changed[1].status = Status::Failed;
    changed[2]
        .tags
        .insert("health_http".into(), "passing".into());
    list.send_replace(MemberList::new(changed));
    // The zone is rebuilt by its own task: the answer changes as soon as it has run.
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let web = ask(&mut c, "web.role.tag.rumor.", RecordType::A).await;
            if answers(&web) == ["10.0.0.1", "10.0.0.3"] {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the answer never changed");
}

/// Sends `packet` over UDP and returns the reply.
async fn udp_exchange(addr: SocketAddr, packet: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, addr).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("no reply")
        .unwrap();
    Message::from_vec(&buf[..len]).unwrap()
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.add_query(hickory_server::proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        qtype,
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

#[tokio::test]
async fn an_edns_version_past_zero_gets_badvers() {
    let (server, _list) = serve(cluster()).await;
    let mut packet =
        Message::from_vec(&query("alpha.node.rumor.", RecordType::A, Some(1232))).unwrap();
    if let Some(edns) = packet.edns.as_mut() {
        edns.set_version(1);
    }
    let m = udp_exchange(server.addr(), &packet.to_vec().unwrap()).await;
    // Code 16 is BADVERS with EDNS and BADSIG with TSIG; hickory decodes it as the latter.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn sixty_members_truncate_over_udp_and_come_whole_over_tcp() {
    let big: Vec<MemberView> = (1..=60)
        .map(|i| {
            member(
                &format!("n{i}"),
                &format!("10.1.0.{i}"),
                Status::Alive,
                &[("role", "big")],
            )
        })
        .collect();
    let (server, _list) = serve(big).await;
    let udp = udp_exchange(
        server.addr(),
        &query("big.role.tag.rumor.", RecordType::A, None),
    )
    .await;
    assert!(udp.metadata.truncation, "60 A records exceed 512 bytes");
    assert!(udp.answers.len() < 60 && !udp.answers.is_empty());
    assert_eq!(server.stats.truncated.load(Ordering::Relaxed), 1);
    let mut c = tcp_client(server.addr()).await;
    let tcp = ask(&mut c, "big.role.tag.rumor.", RecordType::A).await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 60);
    // The answers come in random order: two TCP answers agree on the set, rarely on the order.
    let orders: std::collections::BTreeSet<Vec<String>> = answer_orders(&mut c).await;
    assert!(
        orders.len() > 1,
        "5 answers of 60 records, all in one order"
    );
}

async fn answer_orders(
    c: &mut Client<TokioRuntimeProvider>,
) -> std::collections::BTreeSet<Vec<String>> {
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let m = ask(c, "big.role.tag.rumor.", RecordType::A).await;
        orders.insert(m.answers.iter().map(|r| r.data.to_string()).collect());
    }
    orders
}

#[tokio::test]
async fn garbage_is_dropped_and_counted_and_queries_still_answered() {
    let (server, _list) = serve(cluster()).await;
    let addr = server.addr();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut response = Message::query();
    response.metadata.message_type = hickory_server::proto::op::MessageType::Response;
    let garbage: Vec<Vec<u8>> = vec![
        b"x".to_vec(),
        vec![0xff; 12],
        (0..=255).collect(),
        response.to_vec().unwrap(),
    ];
    for g in &garbage {
        socket.send_to(g, addr).await.unwrap();
    }
    // Over TCP: a frame of garbage closes the connection.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[
        0, 12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ])
    .await
    .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "garbage over TCP got {rest:?}");
    // The UDP loop answers in order: a query sent after the garbage is answered after it.
    let m = udp_exchange(addr, &query("alpha.node.rumor.", RecordType::A, Some(1232))).await;
    assert_eq!(answers(&m), ["10.0.0.1"]);
    assert_eq!(
        server.stats.malformed.load(Ordering::Relaxed),
        garbage.len() as u64 + 1
    );
}
