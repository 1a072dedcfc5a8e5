//! `cargo xtask TASK`: developer tasks of the rumor workspace (the alias is in
//! `.cargo/config.toml`). Nothing here is part of rumor or needed to build it.
//!
//! - `hot-text`: regenerates `agent/hot-text.ld`, the optional hot-first layout of the release
//!   binary's text (docs/hot-text.md).

mod hot_text;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Developer tasks of the rumor workspace")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate agent/hot-text.ld from a callgrind profile of an agent and the CLI
    /// (needs valgrind and nm; see docs/hot-text.md).
    HotText {
        /// Where to write the linker script [default: agent/hot-text.ld in the workspace].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().task {
        Task::HotText { out } => {
            hot_text::run(&out.unwrap_or_else(|| workspace_root().join("agent/hot-text.ld")))
        }
    }
}

/// The workspace's root directory: this crate's parent.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask/ sits inside the workspace")
        .to_path_buf()
}
