//! `rumor`: the agent daemon and its command-line client in one binary.

fn main() -> std::process::ExitCode {
    rumor::cli::main()
}
