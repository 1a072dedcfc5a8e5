//! The running agent's plugins: every installed plugin as it last loaded, and the handlers of
//! its last good version. A plugin that breaks (an edited file that no longer matches its
//! checksum, a setting file gone wrong) keeps its last good handlers running and shows its
//! error in `rumor info`, `rumor plugin list` and the metrics, until it loads again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use rumor_handlers::{HandlerConfig, Setting};
use serde::{Deserialize, Serialize};

use super::load;
use super::signature::PublicKey;
use super::store::PluginDir;
use crate::health::CheckConfig;

/// One installed plugin, as `rumor plugin list` and `rumor info` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatus {
    pub name: String,
    /// The version running (the last good one).
    pub version: String,
    pub description: String,
    /// The last load failed: the previous good version (if any) keeps running.
    pub error: Option<String>,
    /// Its handlers, as the agent names them (`PLUGIN/NAME`).
    pub handlers: Vec<String>,
    /// Its health checks, as the agent names them (`PLUGIN.NAME`).
    #[serde(default)]
    pub checks: Vec<String>,
    pub settings: BTreeMap<String, Setting>,
}

/// Every installed plugin of the agent; shared by the reload and the control API.
pub struct Plugins {
    dir: PluginDir,
    trusted: Mutex<Vec<PublicKey>>,
    state: Mutex<BTreeMap<String, Installed>>,
}

#[derive(Debug, Clone)]
struct Installed {
    status: PluginStatus,
    /// The last good version's handlers.
    handlers: Vec<HandlerConfig>,
    /// And its checks.
    checks: Vec<CheckConfig>,
}

impl Plugins {
    pub fn new(dir: PluginDir, trusted: Vec<PublicKey>) -> Plugins {
        Plugins {
            dir,
            trusted: Mutex::new(trusted),
            state: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn dir(&self) -> &PluginDir {
        &self.dir
    }

    /// The keys plugins must be signed with (none: signatures are not checked).
    pub fn trusted(&self) -> Vec<PublicKey> {
        lock(&self.trusted).clone()
    }

    pub fn set_trusted(&self, keys: Vec<PublicKey>) {
        *lock(&self.trusted) = keys;
    }

    /// Loads every installed plugin again. Returns the handlers of each plugin's last good
    /// version, and one error line per plugin that failed to load.
    pub fn rescan(&self) -> (Vec<HandlerConfig>, Vec<String>) {
        let trusted = self.trusted();
        let mut state = lock(&self.state);
        let installed = self.dir.installed();
        state.retain(|name, _| installed.iter().any(|(n, _)| n == name));
        let mut errors = Vec::new();
        for (name, dir) in installed {
            match load::load(&dir, &trusted) {
                Ok(loaded) if loaded.manifest.name == name => {
                    state.insert(
                        name.clone(),
                        Installed {
                            status: PluginStatus {
                                name,
                                version: loaded.manifest.version,
                                description: loaded.manifest.description,
                                error: None,
                                handlers: loaded.handlers.iter().map(|h| h.name.clone()).collect(),
                                checks: loaded.checks.iter().map(|c| c.name.clone()).collect(),
                                settings: loaded.settings,
                            },
                            handlers: loaded.handlers,
                            checks: loaded.checks,
                        },
                    );
                }
                result => {
                    let error = match result {
                        Ok(loaded) => format!(
                            "its folder is named {name} but its manifest names it {}",
                            loaded.manifest.name
                        ),
                        Err(e) => e.to_string(),
                    };
                    errors.push(format!("plugin {name}: {error}"));
                    let entry = state.entry(name.clone()).or_insert_with(|| Installed {
                        status: PluginStatus {
                            name: name.clone(),
                            version: String::new(),
                            description: String::new(),
                            error: None,
                            handlers: Vec::new(),
                            checks: Vec::new(),
                            settings: BTreeMap::new(),
                        },
                        handlers: Vec::new(),
                        checks: Vec::new(),
                    });
                    entry.status.error = Some(error);
                }
            }
        }
        let handlers = state.values().flat_map(|p| p.handlers.clone()).collect();
        (handlers, errors)
    }

    /// The health checks of each plugin's last good version (as the last rescan found them).
    pub fn checks(&self) -> Vec<CheckConfig> {
        lock(&self.state)
            .values()
            .flat_map(|p| p.checks.clone())
            .collect()
    }

    /// Every installed plugin, by name.
    pub fn status(&self) -> Vec<PluginStatus> {
        lock(&self.state)
            .values()
            .map(|p| p.status.clone())
            .collect()
    }

    /// Installed plugin `name`, if the last scan found it.
    pub fn get(&self, name: &str) -> Option<PluginStatus> {
        lock(&self.state).get(name).map(|p| p.status.clone())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::load::tests::folder;
    use crate::plugin::source::Source;

    #[test]
    fn a_broken_plugin_keeps_its_last_good_handlers() {
        let data = tempfile::tempdir().unwrap();
        let plugins = Plugins::new(PluginDir::in_data_dir(data.path()), Vec::new());
        let source = folder(
            "name = \"demo\"\nversion = \"1.0.0\"\n[[handler]]\nname = \"h\"\ncommand = \"true\"\n",
            &[("run.sh", "true")],
        );
        plugins
            .dir()
            .install(&Source::Folder(source.path().to_path_buf()), &[], &[])
            .unwrap();
        let (handlers, errors) = plugins.rescan();
        assert_eq!(handlers.len(), 1);
        assert!(errors.is_empty());

        std::fs::write(data.path().join("plugins/demo/run.sh"), "edited").unwrap();
        let (handlers, errors) = plugins.rescan();
        assert_eq!(handlers.len(), 1, "the last good version keeps running");
        assert!(errors[0].contains("run.sh has SHA-256"), "{errors:?}");
        assert!(plugins.status()[0].error.is_some());

        std::fs::write(data.path().join("plugins/demo/run.sh"), "true").unwrap();
        let (_, errors) = plugins.rescan();
        assert!(errors.is_empty() && plugins.status()[0].error.is_none());

        plugins.dir().remove("demo").unwrap();
        let (handlers, _) = plugins.rescan();
        assert!(handlers.is_empty() && plugins.status().is_empty());
    }
}
