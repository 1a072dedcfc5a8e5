//! rumor: a decentralized gossip orchestration agent. The `rumor` binary is a thin wrapper
//! around [`cli::main`]; the library exists so benchmarks and simulations in the workspace
//! can drive the same code.

pub mod advertise;
pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod handled;
pub mod journal;
pub mod logging;
pub mod payload;
