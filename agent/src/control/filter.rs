//! Member filtering for `GET /v1/members`: status, name regex and tag regexes, each regex
//! anchored to match the whole value as Serf does.

use regex::Regex;

use super::api::MembersQuery;
use crate::cluster::{MemberView, Status};

/// A compiled [`MembersQuery`].
#[derive(Debug)]
pub struct MemberFilter {
    status: Option<Status>,
    name: Option<Regex>,
    tags: Vec<(String, Regex)>,
}

impl MemberFilter {
    /// Compiles the query's regexes; an invalid one is an error naming it.
    pub fn new(query: &MembersQuery) -> Result<Self, String> {
        let name = query
            .name
            .as_deref()
            .map(|re| anchored(re, "name filter"))
            .transpose()?;
        let tags = query
            .tags
            .iter()
            .map(|(key, re)| Ok((key.clone(), anchored(re, &format!("tag filter {key}="))?)))
            .collect::<Result<_, String>>()?;
        Ok(MemberFilter {
            status: query.status,
            name,
            tags,
        })
    }

    /// Whether `member` passes every filter.
    pub fn matches(&self, member: &MemberView) -> bool {
        self.status.is_none_or(|s| s == member.status)
            && self
                .name
                .as_ref()
                .is_none_or(|re| re.is_match(&member.name))
            && self
                .tags
                .iter()
                .all(|(key, re)| member.tags.get(key).is_some_and(|value| re.is_match(value)))
    }
}

/// Compiles `re` to match whole values only. It is compiled alone first, so that text like
/// `a)|(b` cannot escape the anchoring group.
fn anchored(re: &str, what: &str) -> Result<Regex, String> {
    let invalid = |e: regex::Error| {
        let detail = e.to_string();
        let last = detail.lines().last().unwrap_or("").trim().to_string();
        format!("invalid regex in {what} {re:?}: {last}")
    };
    Regex::new(re).map_err(invalid)?;
    Regex::new(&format!("^(?:{re})$")).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, status: Status, tags: &[(&str, &str)]) -> MemberView {
        MemberView::with_defaults(name, [10, 0, 0, 1].into(), status, tags)
    }

    fn filter(query: &str) -> MemberFilter {
        MemberFilter::new(&MembersQuery::from_query_string(query).unwrap()).unwrap()
    }

    #[test]
    fn regexes_match_whole_values() {
        let web1 = member("web-1", Status::Alive, &[("role", "web")]);
        let web10 = member("web-10", Status::Failed, &[("role", "webby")]);
        let db = member("db-1", Status::Alive, &[]);
        let f = filter("name=web-%5B0-9%5D");
        assert!(f.matches(&web1) && !f.matches(&web10) && !f.matches(&db));
        let f = filter("tag=role%3Dweb");
        assert!(f.matches(&web1) && !f.matches(&web10));
        assert!(!f.matches(&db), "a member without the tag does not match");
        let f = filter("tag=role%3Dweb%7Cwebby&status=failed");
        assert!(!f.matches(&web1) && f.matches(&web10));
        let f = filter("");
        assert!(f.matches(&web1) && f.matches(&db));
    }

    #[test]
    fn invalid_regex_is_named() {
        let query = MembersQuery {
            tags: vec![("role".into(), "web(".into())],
            ..Default::default()
        };
        let err = MemberFilter::new(&query).unwrap_err();
        assert!(
            err.starts_with("invalid regex in tag filter role= \"web(\""),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
