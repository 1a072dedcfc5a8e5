//! The one rule that turns node names, tag keys and tag values into DNS labels.
//!
//! Node names and tags are free text; a DNS label is not. Rather than refuse a member whose
//! name has a dot or a capital in it, every name goes through [`to_label`]: lowercase ASCII
//! letters, digits, `-` and `_` stay (after lowercasing), every other character becomes one
//! `-`. A result that is empty or longer than 63 bytes (the DNS limit for one label) is
//! skipped: that member, or that tag, has no name in DNS. Two names may map to the same label
//! (`web.1` and `web-1`); a lookup of that label answers for both, which is what a user who
//! wrote either would expect. `docs/dns.md` states the same rule for users.

/// The longest label DNS allows (RFC 1035, section 2.3.4).
pub const MAX_LABEL: usize = 63;

/// `text` as a DNS label, or `None` when it has none (empty, or longer than [`MAX_LABEL`]).
pub fn to_label(text: &str) -> Option<String> {
    let label: String = text
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '_') => c,
            _ => '-',
        })
        .collect();
    (!label.is_empty() && label.len() <= MAX_LABEL).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_keep_letters_digits_dash_and_underscore_lowercased() {
        assert_eq!(to_label("Web-01").as_deref(), Some("web-01"));
        assert_eq!(to_label("web_version").as_deref(), Some("web_version"));
        assert_eq!(to_label("v42").as_deref(), Some("v42"));
    }

    #[test]
    fn every_other_character_becomes_one_dash() {
        assert_eq!(to_label("web.1").as_deref(), Some("web-1"));
        assert_eq!(to_label("eu west/2").as_deref(), Some("eu-west-2"));
        assert_eq!(to_label("café").as_deref(), Some("caf-"));
    }

    #[test]
    fn empty_and_overlong_names_are_skipped() {
        assert_eq!(to_label(""), None);
        assert_eq!(to_label(&"a".repeat(63)).map(|l| l.len()), Some(63));
        assert_eq!(to_label(&"a".repeat(64)), None);
    }
}
