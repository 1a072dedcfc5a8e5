//! Moving a live cluster to encryption without downtime, in the three steps memberlist uses:
//! every node accepts both and sends in the clear, then sends sealed, then refuses the clear —
//! each step applied node by node with `rumor reload` while events keep flowing.

use std::path::Path;
use std::time::Duration;

use rumor::cluster::keyring::Key;
use rumor_tests::{Agent, cluster_slot, test_tempdir, wait_for, write_file};

const CONVERGE: Duration = Duration::from_secs(10);

fn wait_everywhere(agents: &[Agent], dir: &Path, event: &str) {
    for a in agents {
        let file = dir.join(a.name());
        wait_for(CONVERGE, "the event to reach every handler", || {
            let got = std::fs::read_to_string(&file).unwrap_or_default();
            if got.lines().any(|l| l == event) {
                Ok(())
            } else {
                Err(format!("{}: {got:?}", a.name()))
            }
        });
    }
}

fn stage(incoming: bool, outgoing: bool, key: &str) -> String {
    format!(
        "encrypt = \"{key}\"\nencrypt_verify_incoming = {incoming}\nencrypt_verify_outgoing = {outgoing}\n"
    )
}

#[test]
fn a_live_cluster_moves_to_encryption_in_three_steps_without_losing_an_event() {
    let _slot = cluster_slot();
    let dir = test_tempdir();
    let key = Key::generate().to_base64();
    let handler = format!(
        "user=echo $SERF_USER_EVENT >> {}/$SERF_SELF_NAME",
        dir.path().display()
    );
    let names = ["stage-1", "stage-2", "stage-3"];
    let mut agents: Vec<Agent> = Vec::new();
    for name in names {
        let config = dir.path().join(format!("{name}.toml"));
        write_file(&config, "");
        let config = config.to_string_lossy().into_owned();
        let mut args = vec![
            "--config",
            config.as_str(),
            "--event-handler",
            handler.as_str(),
        ];
        let seed = agents.first().map(|s| s.addr().to_string());
        if let Some(seed) = &seed {
            args.extend(["--join", seed.as_str()]);
        }
        agents.push(Agent::start(name, &args));
    }
    for a in &agents {
        wait_for(CONVERGE, "the open cluster to converge", || {
            let n = a.members()?.iter().filter(|m| m.status == "alive").count();
            if n == 3 {
                Ok(())
            } else {
                Err(format!("{} sees {n}", a.name()))
            }
        });
    }
    agents[0].cli_ok(&["event", "open"]);
    wait_everywhere(&agents, dir.path(), "open");

    let steps = [
        ((false, false), "sending in the clear, accepting both"),
        ((false, true), "sending sealed, accepting both"),
        ((true, true), "sending sealed, accepting sealed only"),
    ];
    for (n, ((incoming, outgoing), said)) in steps.iter().enumerate() {
        for (i, a) in agents.iter().enumerate() {
            write_file(
                &dir.path().join(format!("{}.toml", a.name())),
                &stage(*incoming, *outgoing, &key),
            );
            let out = a.cli_ok(&["reload"]);
            assert!(out.contains(said), "{}: {out}", a.name());
            // Mid-step (some nodes moved, some not) events still reach everyone.
            let event = format!("step{n}-node{i}");
            agents[(i + 1) % 3].cli_ok(&["event", &event]);
            wait_everywhere(&agents, dir.path(), &event);
        }
    }
    for a in &agents {
        assert!(a.data_dir().join("keyring.json").exists(), "{}", a.name());
        assert_eq!(
            a.counter("packets_undecryptable").unwrap(),
            0,
            "{}",
            a.name()
        );
        let alive = a
            .members()
            .unwrap()
            .iter()
            .filter(|m| m.status == "alive")
            .count();
        assert_eq!(alive, 3, "nobody flapped: {}", a.name());
    }

    // Now the clear is refused: a node without the key stays out, and is counted.
    let seed = agents[0].addr().to_string();
    let stranger = Agent::start("stage-stranger", &["--retry-join", &seed]);
    wait_for(
        CONVERGE,
        "the stranger's packets to be refused",
        || match agents[0].counter("packets_undecryptable")? {
            0 => Err("none refused yet".into()),
            _ => Ok(()),
        },
    );
    assert_eq!(stranger.members().unwrap().len(), 1);
    assert_eq!(agents[1].members().unwrap().len(), 3);
}
