//! The sockets: one UDP socket and one TCP listener on the same address, each a loop that
//! reads a query, answers it from the zone published at that moment, and writes the reply.
//!
//! UDP is one task answering in turn: an answer is a lookup in memory, cheaper than waking a
//! task per packet. TCP (RFC 7766) gives each connection a task, reads length-prefixed queries
//! until the client goes quiet for [`TCP_IDLE`], and holds at most [`MAX_TCP_CONNECTIONS`]:
//! past that a new connection is closed at once (counted), so a flood of idle connections
//! cannot take the agent's file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use super::DnsSettings;
use super::respond::{Transport, respond};
use super::stats::DnsStats;
use super::zone::Zone;

/// How long a TCP connection may stay silent between queries.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once.
pub const MAX_TCP_CONNECTIONS: usize = 128;
/// The largest UDP query we read; bigger ones arrive cut and fail to decode.
const UDP_BUFFER: usize = 4096;

/// What the loops share.
struct Shared {
    zone: watch::Receiver<Arc<Zone>>,
    settings: DnsSettings,
    stats: Arc<DnsStats>,
}

impl Shared {
    fn respond(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        // Clone the Arc and let go of the channel's lock before answering.
        let zone = self.zone.borrow().clone();
        respond(&zone, &self.settings, packet, transport, &self.stats)
    }
}

/// The two serving tasks, stopped when dropped.
pub struct Listeners {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP and TCP on `addr` (with port 0, the port UDP got) and starts serving.
pub async fn bind(
    addr: SocketAddr,
    zone: watch::Receiver<Arc<Zone>>,
    settings: DnsSettings,
    stats: Arc<DnsStats>,
) -> std::io::Result<Listeners> {
    let udp = UdpSocket::bind(addr).await?;
    let addr = udp.local_addr()?;
    let tcp = TcpListener::bind(addr).await?;
    let shared = Arc::new(Shared {
        zone,
        settings,
        stats,
    });
    Ok(Listeners {
        addr,
        tasks: vec![
            tokio::spawn(serve_udp(udp, shared.clone())),
            tokio::spawn(serve_tcp(tcp, shared)),
        ],
    })
}

async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            // An ICMP error for an earlier reply, say: nothing to do with the next query.
            Err(e) => {
                debug!(error = %e, "dns: udp receive");
                continue;
            }
        };
        if let Some(reply) = shared.respond(&buf[..len], Transport::Udp)
            && let Err(e) = socket.send_to(&reply, from).await
        {
            debug!(error = %e, %from, "dns: udp send");
        }
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, typically: wait a moment rather than spin.
                debug!(error = %e, "dns: tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            DnsStats::bump(&shared.stats.tcp_refused);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &shared).await {
                debug!(error = %e, %from, "dns: tcp connection");
            }
            drop(slot);
        });
    }
}

/// Answers the queries on one connection until the client closes it, goes quiet, or sends
/// something that is not a query.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        packet.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await {
            Ok(result) => result?,
            Err(_) => return Ok(()),
        };
        let Some(reply) = shared.respond(&packet, Transport::Tcp) else {
            return Ok(());
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}
