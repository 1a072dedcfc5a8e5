//! `rumor inventory`: the live members as an Ansible dynamic inventory, checked against
//! Ansible's documented format and, where it is installed, with `ansible-inventory` itself.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use rumor_tests::services::program_available;
use rumor_tests::{
    Agent, cluster_slot, rumor_bin, skip_or_fail, test_tempdir, wait_for, write_file,
};
use serde_json::{Value, json};

#[test]
fn the_inventory_groups_the_alive_members_by_tag() {
    let _slot = cluster_slot();
    let web = Agent::start("inv-web", &["--tag", "role=web", "--tag", "dc=eu-1"]);
    let db = Agent::start(
        "inv-db",
        &["--tag", "role=db", "--join", &web.addr().to_string()],
    );
    wait_for(Duration::from_secs(15), "both members alive", || {
        let alive = web
            .members()?
            .iter()
            .filter(|m| m.status == "alive")
            .count();
        (alive == 2).then_some(()).ok_or(format!("{alive}"))
    });

    let list: Value = serde_json::from_str(&web.cli_ok(&["inventory", "--list"])).unwrap();
    assert_eq!(list["role_web"], json!({ "hosts": ["inv-web"] }));
    assert_eq!(list["role_db"], json!({ "hosts": ["inv-db"] }));
    assert_eq!(list["dc_eu_1"], json!({ "hosts": ["inv-web"] }));
    assert_eq!(list["all"]["hosts"], json!(["inv-db", "inv-web"]));
    let vars = &list["_meta"]["hostvars"]["inv-db"];
    assert_eq!(vars["ansible_host"], "127.0.0.1");
    assert_eq!(vars["rumor_status"], "alive");
    assert_eq!(vars["rumor_tags"], json!({ "role": "db" }));
    // Every group is {"hosts": [...]} (and "all" its children), as Ansible documents.
    for (group, body) in list.as_object().unwrap() {
        if group != "_meta" {
            assert!(body["hosts"].is_array(), "{group}: {body}");
        }
    }
    let host: Value =
        serde_json::from_str(&web.cli_ok(&["inventory", "--host", "inv-web"])).unwrap();
    assert_eq!(host["rumor_tags"]["dc"], "eu-1");
    assert_eq!(web.cli_ok(&["inventory", "--host", "nobody"]), "{}\n");
    assert!(
        web.try_cli(&["inventory"]).is_err(),
        "--list or --host is required"
    );

    if !program_available("ansible-inventory") {
        skip_or_fail("ansible-inventory is not installed (apt-get install ansible-core)");
        return;
    }
    // The two-line wrapper of docs/plugins.md, with the agent's socket in the environment.
    let dir = test_tempdir();
    let wrapper = dir.path().join("rumor-inventory");
    write_file(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec {} inventory \"$@\"\n",
            rumor_bin().display()
        ),
    );
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("ansible-inventory")
        .arg("-i")
        .arg(&wrapper)
        .arg("--list")
        .env("RUMOR_CONTROL", web.control_path())
        .env("HOME", dir.path())
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ansible-inventory failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed["role_web"]["hosts"], json!(["inv-web"]), "{parsed}");
    assert_eq!(
        parsed["_meta"]["hostvars"]["inv-db"]["ansible_host"], "127.0.0.1",
        "{parsed}"
    );
    drop(db);
}
