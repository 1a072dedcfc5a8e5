//! A rumor WASM handler (docs/wasm.md): a WASI preview 1 command that reads the event as JSON
//! on stdin.
//!
//! * For a query, it answers (stdout) with something it computed from the event: the local
//!   node's name and role, and the payload's word count and bytes reversed.
//! * For every event, it appends one line to `events.log` in the directory granted at `/data`,
//!   when one is granted (`dirs = [{ host = "...", guest = "/data", writable = true }]`).
//! * It writes what it did to stderr, which goes to the agent's log, and exits 1 on an event it
//!   cannot read, which the agent counts as a failure.
//!
//! Build: `cargo build --release --target wasm32-wasip1` (after `rustup target add
//! wasm32-wasip1`), then point a handler at
//! `target/wasm32-wasip1/release/rumor-wasm-handler-example.wasm`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::Deserialize;

/// The event JSON, version 1 (docs/wasm.md has every field). Fields this handler does not use
/// are left out: a later version of the schema only adds fields.
#[derive(Debug, Deserialize)]
struct Event {
    version: u32,
    kind: String,
    name: Option<String>,
    ltime: Option<u64>,
    payload: Option<Payload>,
    #[serde(default)]
    members: Vec<Member>,
    local: Local,
}

#[derive(Debug, Deserialize)]
struct Payload {
    /// The payload when it is UTF-8.
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Member {
    name: String,
    address: String,
    status: String,
}

#[derive(Debug, Deserialize)]
struct Local {
    name: String,
    tags: BTreeMap<String, String>,
}

fn main() {
    let mut input = String::new();
    let event: Event = match std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str(&input).map_err(|e| e.to_string()))
    {
        Ok(event) => event,
        Err(error) => {
            eprintln!("cannot read the event: {error}");
            std::process::exit(1);
        }
    };
    if event.version != 1 {
        eprintln!(
            "event schema version {} is newer than this handler knows; reading it as version 1",
            event.version
        );
    }

    let text = event
        .payload
        .as_ref()
        .and_then(|p| p.text.clone())
        .unwrap_or_default();
    if event.kind == "query" {
        let role = event.local.tags.get("role").map_or("none", String::as_str);
        let reversed: String = text.trim_end().chars().rev().collect();
        println!(
            "{} (role {role}): {} words, reversed {reversed:?}",
            event.local.name,
            text.split_whitespace().count()
        );
    }

    let line = match &event.name {
        Some(name) => format!(
            "{} {name} ltime={} {text:?}\n",
            event.kind,
            event.ltime.unwrap_or(0)
        ),
        None => {
            let members: Vec<String> = event
                .members
                .iter()
                .map(|m| format!("{}@{}={}", m.name, m.address, m.status))
                .collect();
            format!("{} {}\n", event.kind, members.join(" "))
        }
    };
    // Only a granted directory is there to open: without a grant this fails inside WASI.
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/data/events.log")
    {
        Ok(mut log) => {
            if let Err(error) = log.write_all(line.as_bytes()) {
                eprintln!("cannot write /data/events.log: {error}");
                std::process::exit(1);
            }
            eprintln!("recorded {}", line.trim_end());
        }
        Err(error) => eprintln!("not recording ({error}): grant a directory at /data"),
    }
}
