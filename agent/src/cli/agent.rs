//! `rumor agent`: resolves the configuration, raises the agent's priority above its handlers,
//! then runs the daemon on a multi-threaded runtime.

use rumor_handlers::priority;

use crate::agent::Boost;
use crate::config::AgentConfig;

/// Runs the agent until it stops.
pub fn run(args: crate::config::AgentArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    // Before the runtime exists: its threads inherit this thread's priority.
    let boost = boost(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rumor")
        .enable_all()
        .build()?;
    runtime.block_on(crate::agent::run(args, config, boost))
}

fn boost(config: &AgentConfig) -> Boost {
    if config.priority_boost == 0 {
        return Boost::Off;
    }
    match priority::boost(config.priority_boost) {
        Ok((agent, handlers)) => Boost::Applied { agent, handlers },
        Err(e) => Boost::Failed(e),
    }
}
