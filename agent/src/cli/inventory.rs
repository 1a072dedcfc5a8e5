//! `rumor inventory`: the live members as an Ansible dynamic inventory.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ControlArgs;
use super::output::Output;
use crate::control::api::{MemberView, MembersQuery, Status};

/// Print the alive members as an Ansible dynamic inventory (JSON).
///
/// Ansible runs an inventory script with `--list` (every group and host) or `--host NAME`
/// (one host's variables). Each tag becomes a group, `KEY_VALUE` with every character outside
/// [A-Za-z0-9_] made `_` (role=web: `role_web`); every host has `ansible_host` (its address),
/// `rumor_tags`, `rumor_status` and `rumor_port`. A two-line wrapper script makes it an
/// inventory (`#!/bin/sh`, then `exec rumor inventory "$@"`): `ansible -i ./rumor-inventory
/// role_web -m ping`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every alive member, grouped by tags, with `_meta.hostvars`.
    #[arg(long, required_unless_present = "host", conflicts_with = "host")]
    list: bool,
    /// One member's variables (`{}` for a name that is not an alive member).
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    #[command(flatten)]
    control: ControlArgs,
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let query = MembersQuery {
        status: Some(Status::Alive),
        ..MembersQuery::default()
    };
    let members = args.control.client().members(&query).await?.members;
    let value = match &args.host {
        Some(name) => members
            .iter()
            .find(|m| &m.name == name)
            .map_or_else(|| json!({}), host_vars),
        None => inventory(&members),
    };
    out.json(&value)?;
    Ok(())
}

/// The `--list` document.
fn inventory(members: &[MemberView]) -> Value {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut hostvars = serde_json::Map::new();
    for m in members {
        for (key, value) in &m.tags {
            groups
                .entry(group_name(key, value))
                .or_default()
                .push(&m.name);
        }
        hostvars.insert(m.name.clone(), host_vars(m));
    }
    let mut doc = serde_json::Map::new();
    doc.insert("_meta".into(), json!({ "hostvars": hostvars }));
    doc.insert(
        "all".into(),
        json!({
            "hosts": members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            "children": groups.keys().collect::<Vec<_>>(),
        }),
    );
    for (group, hosts) in groups {
        doc.insert(group, json!({ "hosts": hosts }));
    }
    Value::Object(doc)
}

fn host_vars(m: &MemberView) -> Value {
    json!({
        "ansible_host": m.addr.to_string(),
        "rumor_port": m.port,
        "rumor_status": m.status.as_str(),
        "rumor_tags": m.tags,
    })
}

/// `KEY_VALUE` (or `KEY` for an empty value) as an Ansible group name: letters, digits and
/// `_`, not starting with a digit.
fn group_name(key: &str, value: &str) -> String {
    let raw = if value.is_empty() {
        key.to_string()
    } else {
        format!("{key}_{value}")
    };
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, tags: &[(&str, &str)]) -> MemberView {
        MemberView::with_defaults(name, [10, 0, 0, 1].into(), Status::Alive, tags)
    }

    #[test]
    fn tags_become_sanitised_groups_and_hosts_carry_their_vars() {
        let doc = inventory(&[
            member("web-1", &[("role", "web"), ("dc", "eu-west.1")]),
            member("db-1", &[("role", "db"), ("9lives", "")]),
        ]);
        assert_eq!(doc["role_web"]["hosts"], json!(["web-1"]));
        assert_eq!(doc["dc_eu_west_1"]["hosts"], json!(["web-1"]));
        assert_eq!(doc["_9lives"]["hosts"], json!(["db-1"]));
        assert_eq!(doc["all"]["hosts"], json!(["web-1", "db-1"]));
        let vars = &doc["_meta"]["hostvars"]["web-1"];
        assert_eq!(vars["ansible_host"], "10.0.0.1");
        assert_eq!(vars["rumor_status"], "alive");
        assert_eq!(vars["rumor_tags"]["role"], "web");
    }
}
