//! The control API: HTTP/1.1 + JSON on a Unix socket (or TCP with a token), and its client.
//!
//! `rumor` commands talk to the local agent through it; `docs/control-api.md` documents every
//! endpoint. [`serve`] runs the server inside the agent, [`Client`] is what the CLI uses, and
//! [`api`] holds the request and response bodies both sides share.

pub mod api;
pub mod auth;
pub mod client;
mod context;
pub mod endpoint;
mod events;
mod filter;
mod info;
mod keys;
pub mod limits;
mod members;
pub mod metrics;
mod plugins;
mod query;
mod reply;
mod routes;
pub mod server;

#[cfg(test)]
pub(crate) mod tests;

pub use auth::{ControlAuth, ControlToken, TokenSource};
pub use client::Client;
pub use context::{AgentInfo, ControlContext, ReloadRequest};
pub use endpoint::{ControlEndpoint, default_control_endpoint};
pub use limits::{ConnectionLimits, DEFAULT_MAX_CONNECTIONS};
pub use server::{ServeError, check_endpoint, serve, serve_metrics};
