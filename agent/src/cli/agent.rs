//! `rumor agent`: runs the daemon on a multi-threaded runtime.

/// Runs the agent until it stops.
pub fn run(args: crate::config::AgentArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rumor")
        .enable_all()
        .build()?;
    runtime.block_on(crate::agent::run(args))
}
