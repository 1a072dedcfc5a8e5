//! The tags file (`tags_file`, Serf's `-tags-file`): the node's tags as a JSON object of
//! strings, read at start instead of configured tags, and rewritten whenever the node's tags
//! change (`rumor tags`, `serf tags`), so tags set at runtime survive a restart. The format is
//! Serf's, so a Serf agent's tags file is used as it is.

use std::collections::BTreeMap;
use std::path::Path;

/// The tags in `path`; errors name the file. (Before the file exists the agent starts with no
/// tags, and the first change writes it.)
pub fn load(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the tags file {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "the tags file {} is not a JSON object of strings ({{\"role\": \"web\"}}): {e}",
            path.display()
        )
    })
}

/// Writes `tags` to `path` (mode 0600, as Serf does) atomically: a crash leaves the old file or
/// the new one.
pub fn save(path: &Path, tags: &BTreeMap<String, String>) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(tags).expect("a map of strings is JSON");
    crate::journal::replace_file(path, format!("{text}\n").as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_the_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.json");
        let tags = BTreeMap::from([("role".to_string(), "web".to_string())]);
        save(&path, &tags).unwrap();
        assert_eq!(load(&path).unwrap(), tags);
        std::fs::write(&path, "[1]").unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            err.contains("tags.json") && err.contains("JSON object"),
            "{err}"
        );
        let err = load(&dir.path().join("none")).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }
}
