//! rumor: a decentralized gossip orchestration agent. The `rumor` binary is a thin wrapper
//! around [`cli::main`]; the library exists so benchmarks and simulations in the workspace
//! can drive the same code.

pub mod advertise;
pub mod agent;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod descriptors;
pub mod dns;
pub mod handled;
pub mod health;
pub mod journal;
pub mod log_limit;
pub mod logging;
pub mod member_view;
pub mod node_control;
pub mod payload;
pub mod plugin;
pub mod priority;
pub mod reload;
pub mod systemd;
pub mod tags_file;
pub mod watch;
