//! The TOML file: its keys, parsing, and the file/line/column that errors about its values name.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::handlers::HandlerTable;
use super::validate::{validate_tag_key, validate_tag_value};
use crate::cluster::Profile;

/// The keys of the TOML file. Every key is optional; unknown keys are errors. Each keeps its
/// place in the file so that an invalid value can be reported with its line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileValues {
    pub node: Option<Spanned<String>>,
    pub bind: Option<Spanned<String>>,
    pub advertise: Option<Spanned<String>>,
    pub join: Option<Spanned<Vec<String>>>,
    pub retry_join: Option<Spanned<Vec<String>>>,
    pub tags: Option<Spanned<BTreeMap<String, String>>>,
    pub tags_file: Option<Spanned<PathBuf>>,
    pub data_dir: Option<Spanned<PathBuf>>,
    pub control: Option<Spanned<String>>,
    pub control_token: Option<Spanned<String>>,
    pub control_token_file: Option<Spanned<PathBuf>>,
    pub metrics: Option<Spanned<String>>,
    pub profile: Option<Spanned<Profile>>,
    pub log_level: Option<Spanned<String>>,
    pub log_json: Option<Spanned<bool>>,
    pub dev: Option<Spanned<bool>>,
    pub max_event_bytes: Option<Spanned<usize>>,
    pub max_response_bytes: Option<Spanned<usize>>,
    pub reconnect_timeout: Option<Spanned<String>>,
    pub tombstone_timeout: Option<Spanned<String>>,
    pub priority_boost: Option<Spanned<u8>>,
    pub realtime_priority: Option<Spanned<u8>>,
    pub handler: Option<Vec<Spanned<HandlerTable>>>,
    pub check: Option<Vec<Spanned<crate::health::CheckTable>>>,
    pub encrypt: Option<Spanned<String>>,
    pub keyring_file: Option<Spanned<PathBuf>>,
    pub rejoin_after_leave: Option<Spanned<bool>>,
    pub event_retention: Option<Spanned<usize>>,
    pub event_retention_age: Option<Spanned<String>>,
    pub encrypt_verify_incoming: Option<Spanned<bool>>,
    pub encrypt_verify_outgoing: Option<Spanned<bool>>,
    pub max_control_connections: Option<Spanned<usize>>,
    pub plugin_trusted_keys: Option<Spanned<Vec<String>>>,
    pub dns: Option<Spanned<String>>,
    pub dns_domain: Option<Spanned<String>>,
    pub dns_ttl: Option<Spanned<String>>,
    pub dns_soa_min_ttl: Option<Spanned<String>>,
    pub dns_reverse: Option<Spanned<bool>>,
}

/// A parsed config file, with its text kept to turn byte offsets into line numbers.
#[derive(Debug)]
pub struct ConfigFile {
    pub(super) path: PathBuf,
    text: String,
    pub(super) values: FileValues,
}

impl ConfigFile {
    /// Reads and parses `path`. Fails on a missing file, a syntax error or an unknown key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::FileNotFound {
                    path: path.to_owned(),
                }
            } else {
                ConfigError::ReadFile {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Self::parse(path, text)
    }

    /// Parses `text` as if read from `path` (which only appears in error messages).
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        match toml::from_str::<FileValues>(&text) {
            Ok(values) => Ok(ConfigFile {
                path: path.to_owned(),
                text,
                values,
            }),
            Err(e) => {
                let (line, column) = line_column(&text, e.span().map_or(0, |s| s.start));
                Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    line,
                    column,
                    message: e.message().trim_end().to_owned(),
                })
            }
        }
    }

    /// Attaches the file and line of `span` to an error about a value from this file.
    pub(super) fn locate(&self, span: Range<usize>, err: ConfigError) -> ConfigError {
        let (line, column) = line_column(&self.text, span.start);
        ConfigError::InFile {
            path: self.path.clone(),
            line,
            column,
            error: Box::new(err),
        }
    }

    /// Validates the file's `[tags]` table.
    pub(super) fn tags(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        let Some(tags) = &self.values.tags else {
            return Ok(BTreeMap::new());
        };
        for (key, value) in tags.get_ref() {
            validate_tag_key(key).map_err(|e| self.locate(tags.span(), e))?;
            validate_tag_value(key, value).map_err(|e| self.locate(tags.span(), e))?;
        }
        Ok(tags.get_ref().clone())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
