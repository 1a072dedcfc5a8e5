//! `rumor completions SHELL`: the shell completion script, generated from the same clap
//! definitions as `--help`, so a new command or flag completes as soon as it exists.

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use super::output::Output;

/// Print the shell completion script for bash, zsh or fish.
///
/// The Debian package installs them; by hand: `rumor completions bash >
/// /usr/share/bash-completion/completions/rumor`, `rumor completions zsh >
/// /usr/share/zsh/vendor-completions/_rumor`, `rumor completions fish >
/// /usr/share/fish/vendor_completions.d/rumor.fish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    #[arg(value_enum)]
    shell: CompletionShell,
}

/// The shells we ship scripts for (clap_complete knows more; these are the ones tested).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rumor", &mut script);
    out.write_str(&String::from_utf8(script)?)?;
    Ok(())
}
