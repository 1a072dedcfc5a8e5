//! Plugins: folders that add handlers (templates, scripts, later WASM modules) to an agent,
//! with settings, checksums and optional signatures, installed from the built-in catalog, a
//! folder or a `.tar.gz`, and reloaded while the agent runs.
//!
//! * [`manifest`]: `plugin.toml` — name, version, the oldest rumor it runs on, settings,
//!   handlers, and the SHA-256 of every file.
//! * [`settings`]: what each setting takes, and the values an installation gives.
//! * [`checksum`]: a folder's files against its manifest.
//! * [`signature`]: optional Ed25519 signatures of the manifest, checked against the agent's
//!   trusted keys.
//! * [`catalog`]: the built-in plugins (the workspace's `plugins/`), embedded in the binary.
//! * [`source`]: where an install comes from (catalog, folder, archive).
//! * [`load`]: an installed folder checked and turned into handlers.
//! * [`store`]: the plugin directory, and install, set, remove.
//! * [`host`]: the running agent's plugins: the last good version of each, and its errors.
//!
//! A plugin's handlers are named `PLUGIN/NAME` and run like any other handler; their
//! templates belong to the plugin's scope, so those sharing a reload command reload once.

use thiserror::Error;

pub mod catalog;
pub mod checksum;
pub mod host;
pub mod load;
pub mod manifest;
pub mod settings;
pub mod signature;
pub mod source;
pub mod store;

pub use host::{PluginStatus, Plugins};
pub use source::Source;
pub use store::PluginDir;

/// Why a plugin cannot be installed or loaded. Each message says what and where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PluginError {
    #[error("{0}")]
    NotFound(String),
    #[error("invalid plugin manifest: {0}")]
    Manifest(String),
    #[error("plugin {plugin} needs rumor {needs} or newer; this is rumor {have}")]
    TooOld {
        plugin: String,
        needs: String,
        have: String,
    },
    #[error("setting {name:?}: {message}")]
    Setting { name: String, message: String },
    #[error("checksum mismatch: {0}")]
    Checksum(String),
    #[error("signature refused: {0}")]
    Signature(String),
    #[error("invalid plugin archive {0}")]
    Archive(String),
    #[error("handler {handler:?}: {message}")]
    Handler { handler: String, message: String },
    #[error("invalid [[check]]: {0}")]
    Check(String),
    #[error("{0}")]
    Io(String),
}

/// A plugin's handler `local` as the agent names it: `PLUGIN/local`.
pub fn handler_name(plugin: &str, local: &str) -> String {
    format!("{plugin}/{local}")
}

/// A plugin's check `local` as the agent names it: `PLUGIN.local` (a check's name is part of
/// a tag key, where `/` is not allowed).
pub fn check_name(plugin: &str, local: &str) -> String {
    format!("{plugin}.{local}")
}
