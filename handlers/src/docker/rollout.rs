//! Rolling without a coordinator, as pure functions of the member list.
//!
//! # How
//!
//! Every host that runs the app sees the same deploy event and the same member list (within
//! the gossip delay), so each derives the same plan on its own: the matching alive members
//! sorted by name, cut into batches of `max_parallel`; a host's batch is its rank divided by
//! the batch size. A host starts when every host of the earlier batches shows, in its tags,
//! the new version and passing health; if one of them shows `APP_deploy=failed:TAG` (or
//! `halted:TAG`, which a host publishes when it stops for that reason), it stops too. So a
//! failure halts the rest of the rollout with no one telling anyone to stop.
//!
//! # Why the tags
//!
//! The tags are what every member already gossips, what haproxy and DNS read, and what
//! survives in each member's view if the sender of the deploy disappears. A host that left
//! or failed during the rollout drops out of the plan instead of blocking it.

use crate::members::{Member, MemberStatus};

use super::settings::{Parallel, Selector};

/// The tags a host publishes for `app`.
#[derive(Debug, Clone)]
pub struct AppTags {
    pub version: String,
    pub port: String,
    pub deploy: String,
    pub reason: String,
    pub health: String,
}

impl AppTags {
    pub fn new(app: &str) -> AppTags {
        AppTags {
            version: format!("{app}_version"),
            port: format!("{app}_port"),
            deploy: format!("{app}_deploy"),
            reason: format!("{app}_reason"),
            health: format!("{HEALTH_TAG_PREFIX}{app}"),
        }
    }
}

/// Tags starting with this are health states; a member serves only when all are `passing`
/// (the agent computes [`Member::passing`] by that rule).
pub const HEALTH_TAG_PREFIX: &str = "health_";
pub const PASSING: &str = "passing";

/// This host's place in a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The hosts of the batches before this host's, by name.
    pub earlier: Vec<String>,
    /// This host's batch, from 0.
    pub batch: usize,
    pub batches: usize,
}

/// The plan for `local`, or `None` when it is not one of the hosts that run the app.
pub fn plan(
    members: &[Member],
    selector: &Selector,
    local: &str,
    parallel: Parallel,
) -> Option<Plan> {
    let mut hosts: Vec<&str> = members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive && selector.matches(&m.tags))
        .map(|m| m.name.as_str())
        .collect();
    hosts.sort_unstable();
    let rank = hosts.iter().position(|h| *h == local)?;
    let size = parallel.batch_size(hosts.len());
    let batch = rank / size;
    Some(Plan {
        earlier: hosts[..batch * size]
            .iter()
            .map(|h| h.to_string())
            .collect(),
        batch,
        batches: hosts.len().div_ceil(size),
    })
}

/// What a host waiting for its turn does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Every earlier host runs the version, healthy.
    Go,
    /// These earlier hosts are not there yet.
    Wait(Vec<String>),
    /// An earlier host failed (or halted): the rollout stops here.
    Halt { host: String, state: String },
}

/// Whether a host of batch `plan.batch` may start rolling to `version`.
pub fn gate(plan: &Plan, members: &[Member], tags: &AppTags, version: &str) -> Gate {
    let mut waiting = Vec::new();
    for host in &plan.earlier {
        let Some(member) = members.iter().find(|m| &m.name == host) else {
            continue;
        };
        if member.status != MemberStatus::Alive {
            continue;
        }
        let state = member
            .tags
            .get(&tags.deploy)
            .map(String::as_str)
            .unwrap_or("");
        if state == format!("failed:{version}") || state == format!("halted:{version}") {
            return Gate::Halt {
                host: host.clone(),
                state: state.to_string(),
            };
        }
        // `passing` is the agent's one rule: alive and every `health_*` tag passing.
        let serving =
            member.tags.get(&tags.version).map(String::as_str) == Some(version) && member.passing;
        if !serving {
            waiting.push(host.clone());
        }
    }
    if waiting.is_empty() {
        Gate::Go
    } else {
        Gate::Wait(waiting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn member(name: &str, tags: &[(&str, &str)]) -> Member {
        Member {
            name: name.into(),
            address: "127.0.0.1".parse().unwrap(),
            port: 7946,
            status: MemberStatus::Alive,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            generation: 1,
            passing: true,
        }
    }

    /// Sets a member's health tag and, as the agent would, its `passing`.
    fn health(m: &mut Member, state: &str) {
        m.tags.insert("health_web".into(), state.into());
        m.passing = state == PASSING;
    }

    fn fleet() -> Vec<Member> {
        vec![
            member("c", &[("role", "web")]),
            member("a", &[("role", "web")]),
            member("lb", &[("role", "lb")]),
            member("b", &[("role", "web")]),
        ]
    }

    #[test]
    fn batches_by_rank_among_matching_hosts() {
        let web = Selector::parse("role=web").unwrap();
        let one = Parallel::Count(1);
        assert_eq!(
            plan(&fleet(), &web, "a", one).unwrap().earlier,
            Vec::<String>::new()
        );
        let c = plan(&fleet(), &web, "c", one).unwrap();
        assert_eq!((c.batch, c.batches), (2, 3));
        assert_eq!(c.earlier, ["a", "b"]);
        assert!(plan(&fleet(), &web, "lb", one).is_none());
        let all = plan(&fleet(), &web, "c", Parallel::Percent(100)).unwrap();
        assert_eq!((all.batch, all.earlier.len()), (0, 0));
    }

    #[test]
    fn waits_for_earlier_hosts_then_goes() {
        let tags = AppTags::new("web");
        let web = Selector::parse("role=web").unwrap();
        let mut members = fleet();
        let p = plan(&members, &web, "c", Parallel::Count(1)).unwrap();
        assert_eq!(
            gate(&p, &members, &tags, "v2"),
            Gate::Wait(vec!["a".into(), "b".into()])
        );
        for m in members
            .iter_mut()
            .filter(|m| m.name == "a" || m.name == "b")
        {
            m.tags.insert("web_version".into(), "v2".into());
            health(m, "critical");
        }
        assert_eq!(
            gate(&p, &members, &tags, "v2"),
            Gate::Wait(vec!["a".into(), "b".into()])
        );
        for m in members.iter_mut() {
            health(m, "passing");
        }
        assert_eq!(gate(&p, &members, &tags, "v2"), Gate::Go);
    }

    #[test]
    fn a_failure_halts_later_batches_and_a_gone_host_does_not_block() {
        let tags = AppTags::new("web");
        let web = Selector::parse("role=web").unwrap();
        let mut members = fleet();
        let p = plan(&members, &web, "c", Parallel::Count(1)).unwrap();
        members[1]
            .tags
            .insert("web_deploy".into(), "failed:v3".into());
        assert_eq!(
            gate(&p, &members, &tags, "v3"),
            Gate::Halt {
                host: "a".into(),
                state: "failed:v3".into()
            }
        );
        // An old failure does not stop a newer version.
        assert_eq!(
            gate(&p, &members, &tags, "v4"),
            Gate::Wait(vec!["a".into(), "b".into()])
        );
        members[1].status = MemberStatus::Failed;
        members[3].tags.insert("web_version".into(), "v4".into());
        assert_eq!(gate(&p, &members, &tags, "v4"), Gate::Go);
    }
}
