//! `rumor agent`: resolves the configuration, raises the agent's priority above its handlers,
//! then runs the daemon on a single-threaded runtime.

use crate::agent::{Boost, Realtime};
use crate::config::AgentConfig;
use crate::priority;

/// Runs the agent until it stops.
pub fn run(args: crate::config::AgentArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    // Before the runtime exists, on the thread that will run it (the gossip): the threads it
    // creates later inherit the nice value, and start as normal tasks under real-time.
    let boost = boost(&config);
    let realtime = realtime(&config);
    // One thread runs every task. The agent's work is many short wake-ups (a packet, a timer,
    // a handler's pipe or exit), and on a multi-threaded runtime each one can also wake a
    // second worker to share it: one thread uses measurably less CPU per event (see
    // docs/performance.md), CPU the handlers get instead. Nothing here computes for long;
    // disk writes go to the blocking pool (threads named `rumor`) or threads of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("rumor")
        .enable_all()
        .build()?;
    runtime.block_on(crate::agent::run(args, config, boost, realtime))
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

fn realtime(config: &AgentConfig) -> Realtime {
    if config.realtime_priority == 0 {
        return Realtime::Off;
    }
    match priority::realtime(config.realtime_priority) {
        Ok(_) => Realtime::Applied(config.realtime_priority),
        Err(e) => Realtime::Failed(e),
    }
}
