//! The read-only view DNS answers from, and the task that keeps it current.
//!
//! Why: a query must never wait on the gossip thread. The cluster publishes its member list on
//! a watch channel whenever it changes; [`keep_published`] turns each version into a [`Zone`]
//! (only the members [`MemberView::passing`] admits, their names already mapped to labels) and
//! swaps it in with one pointer store. A query takes the current `Arc<Zone>` and answers from it
//! alone, so a change lands between two queries, never inside one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::labels::to_label;
use super::stats::DnsStats;
use crate::cluster::{MemberList, MemberView};

/// One member DNS answers for.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneMember {
    /// Its node name as a label (see [`to_label`]).
    pub label: String,
    pub addr: IpAddr,
    /// Its tags as (key label, value label); tags without a label are left out.
    pub tags: Vec<(String, String)>,
    /// Its tags as TXT strings, `key=value`, unmapped (those over 255 bytes are left out).
    pub txt: Vec<String>,
}

impl ZoneMember {
    /// Whether every `(key, value)` pair is one of its tags.
    pub fn has_tags(&self, pairs: &[(String, String)]) -> bool {
        pairs.iter().all(|pair| self.tags.contains(pair))
    }

    /// The value of tag `key` (a label), if it has one.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The members DNS answers for, indexed for the lookups it serves.
#[derive(Debug, Default)]
pub struct Zone {
    members: Vec<ZoneMember>,
    by_label: HashMap<String, Vec<usize>>,
    by_addr: HashMap<IpAddr, Vec<usize>>,
    /// The SOA serial: the build's Unix time, so it grows with every change.
    pub serial: u32,
}

/// The longest string one TXT character-string holds.
const MAX_TXT_STRING: usize = 255;

impl Zone {
    /// The zone for `list`: its passing members whose names map to a label.
    pub fn build(list: &[MemberView]) -> Zone {
        let members: Vec<ZoneMember> = list
            .iter()
            .filter(|m| m.passing())
            .filter_map(|m| {
                Some(ZoneMember {
                    label: to_label(&m.name)?,
                    addr: m.addr,
                    tags: m
                        .tags
                        .iter()
                        .filter_map(|(k, v)| Some((to_label(k)?, to_label(v)?)))
                        .collect(),
                    txt: m
                        .tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .filter(|t| t.len() <= MAX_TXT_STRING)
                        .collect(),
                })
            })
            .collect();
        let mut by_label: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_addr: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        for (i, m) in members.iter().enumerate() {
            by_label.entry(m.label.clone()).or_default().push(i);
            by_addr.entry(m.addr).or_default().push(i);
        }
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Zone {
            members,
            by_label,
            by_addr,
            serial,
        }
    }

    /// How many members it answers for.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members whose node name maps to `label`.
    pub fn nodes(&self, label: &str) -> impl Iterator<Item = &ZoneMember> {
        self.indexed(self.by_label.get(label))
    }

    /// The members at `addr`.
    pub fn at(&self, addr: IpAddr) -> impl Iterator<Item = &ZoneMember> {
        self.indexed(self.by_addr.get(&addr))
    }

    /// The members with every tag in `pairs` (every member when `pairs` is empty).
    pub fn tagged<'a>(
        &'a self,
        pairs: &'a [(String, String)],
    ) -> impl Iterator<Item = &'a ZoneMember> + 'a {
        self.members.iter().filter(move |m| m.has_tags(pairs))
    }

    fn indexed<'a>(&'a self, at: Option<&'a Vec<usize>>) -> impl Iterator<Item = &'a ZoneMember> {
        at.into_iter().flatten().map(|&i| &self.members[i])
    }
}

/// Rebuilds the zone from every version of the member list the cluster publishes, until the
/// cluster stops. The first version is built at once.
pub async fn keep_published(
    mut list: watch::Receiver<MemberList>,
    zone: watch::Sender<Arc<Zone>>,
    stats: Arc<DnsStats>,
) {
    loop {
        let current = list.borrow_and_update().clone();
        let built = Zone::build(&current);
        stats.members.store(built.len() as u64, Ordering::Relaxed);
        zone.send_replace(Arc::new(built));
        if list.changed().await.is_err() {
            return;
        }
    }
}
