//! Finding the `rumor` binary under test.
//!
//! Cargo only gives `CARGO_BIN_EXE_<name>` to integration tests of the package that owns the
//! binary, and `rumor` lives in another package. So the first test that needs the binary builds
//! it, once per test process, with a nested `cargo build -p rumor --bin rumor` in the workspace
//! root, and takes the executable's path from cargo's JSON messages (that path is right whatever
//! `CARGO_TARGET_DIR`, `--target-dir` or `build.target-dir` says; the nested cargo inherits
//! `CARGO_TARGET_DIR` from the environment).
//!
//! This does not deadlock under `cargo test --workspace`: cargo releases its build-directory lock
//! once compilation is done, before it runs the test binaries, so the nested build only waits
//! for the lock if another cargo is compiling in the same target directory at that moment. The
//! build is a no-op when `cargo test --workspace` has already built the `rumor` binary with the
//! same profile.
//!
//! Set `RUMOR_BIN=/path/to/rumor` to skip the build and test a given binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The `rumor` binary, built on first use. Panics (failing the test) if it cannot be built.
pub fn rumor_bin() -> &'static Path {
    match BINARY.get_or_init(locate) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

fn locate() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("RUMOR_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("RUMOR_BIN={} is not a file", bin.display()))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "rumor",
            "--bin",
            "rumor",
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .map_err(|e| format!("cannot run {cargo:?} to build rumor: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "`cargo build -p rumor --bin rumor` in {} failed ({}):\n{}",
            root.display(),
            output.status,
            tail(&stderr, 40)
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rumor")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            format!(
                "cargo built rumor but reported no executable for it:\n{}",
                tail(&stderr, 20)
            )
        })
}

/// `dir/serf`, a symlink to the `rumor` binary: run under that name, rumor takes Serf's
/// commands and flags. Put `dir` first in `PATH` to run scripts written for Serf.
pub fn serf_symlink(dir: &Path) -> PathBuf {
    let link = dir.join("serf");
    std::os::unix::fs::symlink(rumor_bin(), &link)
        .unwrap_or_else(|e| panic!("cannot link {} to rumor: {e}", link.display()));
    link
}

/// The workspace root: this crate lives in `<root>/tests`.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Lines of an agent's log shown when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The commands a `--help` text lists under `Commands:` (without `help`), in its order.
pub fn help_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}
