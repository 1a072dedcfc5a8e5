//! `cargo xtask hot-text`: regenerates `agent/hot-text.ld`, the linker script that puts the
//! code an agent and the common CLI commands run next to each other in the release binary.
//! What the layout is for, what it relies on and when to regenerate it: docs/hot-text.md.
//!
//! How: it builds the release binary, runs one agent under callgrind through a life like a
//! cluster member's ([`workload`]), then the common CLI commands, and writes one input-section
//! pattern per function that ran, the agent's first, then the CLI's ([`script`]). Symbols are
//! v0-mangled (`.cargo/config.toml`), so a generic function's pattern names its type
//! arguments; crate disambiguators and back-references, which change with any dependency or
//! compiler update, are wildcards, so the script stays valid until functions are renamed.
//! Functions added since it was written simply land in the rest of the text.

mod script;
mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Profiles the release binary and writes the linker script to `out`.
pub fn run(out: &Path) -> anyhow::Result<()> {
    for tool in ["valgrind", "nm"] {
        Command::new(tool)
            .arg("--version")
            .output()
            .with_context(|| format!("{tool} is needed (apt-get install valgrind binutils)"))?;
    }
    let bin = build_release_rumor()?;
    let defined = script::defined_functions(&bin)?;
    if !defined.iter().any(|name| is_v0_of_rumor(name)) {
        bail!(
            "{} has no v0-mangled symbol of rumor's own, so no pattern would match it: \
             build it with `-C symbol-mangling-version=v0` (.cargo/config.toml sets it; \
             a RUSTFLAGS variable replaces it)",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let profiles = workload::profile(&bin, dir.path())?;
    let agent = script::executed(&profiles.agent, &defined)?;
    let mut cli = BTreeSet::new();
    for path in &profiles.cli {
        cli.extend(script::executed(path, &defined)?);
    }
    let mut patterns = Vec::new();
    let mut seen = BTreeSet::new();
    let cli_only = cli.iter().filter(|f| !agent.contains(*f));
    for name in agent.iter().chain(cli_only) {
        let pattern = script::pattern(name);
        if seen.insert(pattern.clone()) {
            patterns.push(pattern);
        }
    }
    std::fs::write(out, script::script(&patterns))
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "{}: {} patterns ({} functions the agent ran, {} more the CLI did)",
        out.display(),
        patterns.len(),
        agent.len(),
        cli.len() - cli.intersection(&agent).count()
    );
    Ok(())
}

/// Whether a symbol is a v0-mangled one of the `rumor` crate: the precompiled standard library
/// is v0-mangled whatever the flags of this build, so only rumor's own tell.
fn is_v0_of_rumor(symbol: &str) -> bool {
    symbol.starts_with("_R") && symbol.contains("_5rumor")
}

/// Builds the release `rumor` binary with the workspace's flags (so its symbols are named as
/// the script must name them) and returns its path.
fn build_release_rumor() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the release rumor binary (cargo build --release -p rumor)...");
    let output = Command::new(&cargo)
        .current_dir(crate::workspace_root())
        .args(["build", "--release", "-p", "rumor", "--bin", "rumor"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cargo:?} to build rumor"))?;
    if !output.status.success() {
        bail!("`cargo build --release -p rumor` failed (its errors are above)");
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "rumor")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built rumor but reported no executable")
}
