//! The docs name the tests that keep their promises, and the code and docs link to sections of
//! the docs: a renamed or deleted test or heading must not leave a promise or link pointing at
//! nothing.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_test_the_guarantees_table_names_exists() {
    let root = workspace();
    let doc = std::fs::read_to_string(root.join("docs/operations.md")).expect("operations.md");
    let table = doc
        .split("## What is guaranteed")
        .nth(1)
        .expect("operations.md has a guarantees section");
    let table = table.split("\n## ").next().unwrap_or(table);
    // The last column of each row: backticked names that look like test functions.
    let named: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .filter_map(|l| l.trim_end_matches('|').rsplit('|').next())
        .flat_map(|cell| cell.split('`').skip(1).step_by(2))
        .filter(|n| n.len() > 20 && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect();
    assert!(named.len() >= 10, "the table names its tests: {named:?}");

    let mut files = Vec::new();
    for dir in ["agent", "handlers", "tests"] {
        rust_sources(&root.join(dir), &mut files);
    }
    let sources: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    let missing: Vec<&str> = named
        .iter()
        .copied()
        .filter(|name| {
            let def = format!("fn {name}(");
            !sources.iter().any(|s| s.contains(&def))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md names tests that do not exist: {missing:?}"
    );
}

/// A heading's anchor as GitHub makes it: lower case, punctuation but `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn every_file(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let skipped = path
            .file_name()
            .is_some_and(|n| n == "target" || n == "corpus" || n == "artifacts");
        if path.is_dir() && !skipped {
            every_file(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// Links to a section of a doc (a name ending in `.md`, then `#` and the anchor) in the docs,
/// the README, the sources, the package and the examples: the doc exists and has that heading.
/// Comments and service files send readers there; a renamed heading must not leave them at the
/// top of the page.
#[test]
fn every_link_to_a_doc_section_names_a_heading_that_exists() {
    let root = workspace();
    let mut docs = vec![root.join("README.md")];
    every_file(&root.join("docs"), &mut docs);
    let headings: std::collections::BTreeMap<String, Vec<String>> = docs
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let anchors = text
                .lines()
                .filter(|l| l.starts_with('#'))
                .map(|l| anchor(l.trim_start_matches('#')))
                .collect();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                anchors,
            )
        })
        .collect();

    let mut files = Vec::new();
    for place in [
        "README.md",
        "docs",
        "agent",
        "handlers",
        "tests",
        "packaging",
        "examples",
        "plugins",
        "xtask",
        "fuzz",
        ".ci",
    ] {
        every_file(&root.join(place), &mut files);
    }
    let mut links = 0;
    let mut broken = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue; // not text
        };
        for (at, _) in text.match_indices(".md#") {
            let doc_start = text[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .map_or(0, |i| i + 1);
            let doc = format!("{}.md", &text[doc_start..at]);
            let rest = &text[at + 4..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .unwrap_or(rest.len());
            let wanted = &rest[..end];
            if doc == ".md" || wanted.is_empty() {
                continue;
            }
            links += 1;
            let found = headings
                .get(&doc)
                .is_some_and(|anchors| anchors.iter().any(|a| a == wanted));
            if !found {
                let place = file.strip_prefix(&root).unwrap_or(file).display();
                broken.push(format!("{place}: {doc}#{wanted}"));
            }
        }
    }
    assert!(links > 50, "only {links} links found: the scan is broken");
    assert!(
        broken.is_empty(),
        "links to doc sections that do not exist:\n{}",
        broken.join("\n")
    );
}
