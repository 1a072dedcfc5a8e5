//! The docs name the tests that keep their promises: a renamed or deleted test must not leave
//! a promise pointing at nothing.

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
