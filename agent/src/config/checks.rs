//! Health checks from `--check NAME=COMMAND` flags and the config file's `[[check]]` tables
//! (see [`crate::health::config`]), each error located at its flag or its table's line.

use crate::health::config::check_unique;
use crate::health::{CheckConfig, CheckTable};

use super::{ConfigError, ConfigFile};

/// The flags' checks, then the file's; two of one name are an error.
pub(super) fn combine(
    flags: &[String],
    file: Option<&ConfigFile>,
) -> Result<Vec<CheckConfig>, ConfigError> {
    let mut checks = Vec::new();
    for flag in flags {
        let (name, command) = flag.split_once('=').ok_or_else(|| {
            ConfigError::given(
                "check",
                ConfigError::invalid(
                    "check",
                    flag,
                    "expected NAME=COMMAND, e.g. web='curl -fsS http://127.0.0.1/health'",
                ),
            )
        })?;
        let table = CheckTable {
            name: Some(name.to_string()),
            command: Some(command.to_string()),
            ..CheckTable::default()
        };
        let check = table
            .to_config(None)
            .map_err(|e| ConfigError::given("check", ConfigError::Check(e)))?;
        checks.push(check);
    }
    if let Some(file) = file {
        checks.extend(from_file(file)?);
    }
    check_unique(&checks).map_err(ConfigError::Check)?;
    Ok(checks)
}

/// The file's checks, validated; two of one name are an error.
pub(super) fn from_file(file: &ConfigFile) -> Result<Vec<CheckConfig>, ConfigError> {
    let Some(tables) = &file.values.check else {
        return Ok(Vec::new());
    };
    let mut checks: Vec<CheckConfig> = Vec::new();
    for table in tables {
        let check = table
            .get_ref()
            .to_config(None)
            .map_err(|e| file.locate(table.span(), ConfigError::Check(e)))?;
        checks.push(check);
        check_unique(&checks).map_err(|e| file.locate(table.span(), ConfigError::Check(e)))?;
    }
    Ok(checks)
}
