//! Which nodes a query addresses: node names and tag expressions, matched as Serf matches
//! them (every listed tag's whole value against its regular expression).

use regex::Regex;
use rumor_handlers::event::Tags;
use serde::{Deserialize, Serialize};

/// Which nodes should answer: all listed names (none listed = any name) and every tag regex.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryFilter {
    pub nodes: Vec<String>,
    /// (tag key, regular expression the whole value must match)
    pub tags: Vec<(String, String)>,
}

/// A filter with its regular expressions compiled.
pub struct CompiledFilter {
    nodes: Vec<String>,
    tags: Vec<(String, Regex)>,
}

impl QueryFilter {
    /// Compiles the tag expressions, anchored at both ends as Serf does.
    pub fn compile(&self) -> Result<CompiledFilter, String> {
        let tags = self
            .tags
            .iter()
            .map(|(key, expr)| {
                Regex::new(&format!("^(?:{expr})$"))
                    .map(|re| (key.clone(), re))
                    .map_err(|e| format!("invalid regular expression for tag {key:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(CompiledFilter {
            nodes: self.nodes.clone(),
            tags,
        })
    }
}

impl CompiledFilter {
    pub fn matches(&self, name: &str, tags: &Tags) -> bool {
        (self.nodes.is_empty() || self.nodes.iter().any(|n| n == name))
            && self
                .tags
                .iter()
                .all(|(key, re)| tags.get(key).is_some_and(|v| re.is_match(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_match_names_and_anchored_tag_regexes() {
        let f = QueryFilter {
            nodes: vec![],
            tags: vec![("role".into(), "db|cache".into())],
        }
        .compile()
        .unwrap();
        assert!(f.matches("a", &tags(&[("role", "db")])));
        assert!(!f.matches("a", &tags(&[("role", "dbx")])), "anchored");
        assert!(!f.matches("a", &tags(&[])), "missing tag never matches");
        let f = QueryFilter {
            nodes: vec!["b".into()],
            tags: vec![],
        }
        .compile()
        .unwrap();
        assert!(f.matches("b", &tags(&[])) && !f.matches("a", &tags(&[])));
        let err = QueryFilter {
            nodes: vec![],
            tags: vec![("role".into(), "(".into())],
        }
        .compile()
        .err()
        .unwrap();
        assert!(err.contains("role"), "{err}");
    }
}
