//! A tiny HTTP server for the load-balancer tests and benchmark: answers every request on
//! 127.0.0.1:PORT with `200 OK` and its name, so a client behind haproxy sees which backend
//! served it. A process of its own, so a test can kill -9 it with its agent.
//!
//! Usage: web-backend NAME PORT

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: web-backend NAME PORT");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("a port")))
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            // Read the request head (to the blank line); bodies are not expected.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                name.len()
            );
            let _ = stream.write_all(response.as_bytes());
        });
    }
}
