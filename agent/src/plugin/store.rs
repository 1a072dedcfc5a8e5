//! The plugin directory (`<data dir>/plugins`, one folder per installed plugin) and what
//! changes it: install, set, remove. Nothing is ever half-installed: an install is copied and
//! checked in full in a staging folder of the same directory, then swapped in with one
//! rename (an exchange with the previous version, when there is one); settings are written to a
//! temporary file and renamed; a removal renames the folder away before deleting it. Folders
//! whose names start with `.` are staging and never load.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::PluginError;
use super::load::{self, Loaded};
use super::manifest::check_name;
use super::settings::{self, SETTINGS_FILE};
use super::signature::PublicKey;
use super::source::Source;

/// The plugin directory of one agent.
#[derive(Debug, Clone)]
pub struct PluginDir {
    path: PathBuf,
}

impl PluginDir {
    /// `<data_dir>/plugins`.
    pub fn in_data_dir(data_dir: &Path) -> PluginDir {
        PluginDir {
            path: data_dir.join("plugins"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The installed plugins' names and folders, sorted (a missing directory: none).
    pub fn installed(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut found: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        found.sort();
        found
    }

    /// The folder of installed plugin `name`.
    pub fn folder(&self, name: &str) -> Result<PathBuf, PluginError> {
        check_name(name).map_err(|_| not_installed(name))?;
        let dir = self.path.join(name);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(not_installed(name))
        }
    }

    /// Installs (or upgrades) a plugin from `source` with the `set` values on top of those of
    /// the version installed before, if any. Everything is checked before the plugin directory
    /// changes.
    pub fn install(
        &self,
        source: &Source,
        set: &[(String, String)],
        trusted: &[PublicKey],
    ) -> Result<Loaded, PluginError> {
        fs::create_dir_all(&self.path)
            .map_err(|e| PluginError::Io(format!("cannot create {}: {e}", self.path.display())))?;
        let staging = Staging::new(&self.path, "install")?;
        source.copy_to(staging.path())?;
        let (manifest, _) = load::read_manifest(staging.path())?;
        if let Source::Catalog(name) = source
            && *name != manifest.name
        {
            return Err(PluginError::Manifest(format!(
                "built-in plugin {name} is named {:?} in its manifest",
                manifest.name
            )));
        }
        let target = self.path.join(&manifest.name);
        let mut given = if target.is_dir() {
            load::read_given(&target).unwrap_or_default()
        } else {
            settings::Given::new()
        };
        given.retain(|k, _| manifest.settings.contains_key(k));
        given.extend(settings::parse_given(&manifest.settings, set)?);
        write_given(staging.path(), &given)?;
        load::load_with(staging.path(), trusted, given)?;
        staging.swap_into(&target)?;
        // Loaded again from where it now lives: its handlers read their templates there.
        load::load(&target, trusted)
    }

    /// Changes settings of an installed plugin; refused (and nothing written) if the plugin
    /// does not load with them.
    pub fn set(
        &self,
        name: &str,
        set: &[(String, String)],
        trusted: &[PublicKey],
    ) -> Result<Loaded, PluginError> {
        let dir = self.folder(name)?;
        let (manifest, _) = load::read_manifest(&dir)?;
        let mut given = load::read_given(&dir)?;
        given.extend(settings::parse_given(&manifest.settings, set)?);
        let loaded = load::load_with(&dir, trusted, given.clone())?;
        write_given(&dir, &given)?;
        Ok(loaded)
    }

    /// Removes an installed plugin.
    pub fn remove(&self, name: &str) -> Result<(), PluginError> {
        let dir = self.folder(name)?;
        let away = self.path.join(format!(".remove-{name}-{}", unique()));
        fs::rename(&dir, &away)
            .map_err(|e| PluginError::Io(format!("cannot remove {}: {e}", dir.display())))?;
        fs::remove_dir_all(&away)
            .map_err(|e| PluginError::Io(format!("cannot delete {}: {e}", away.display())))
    }
}

fn not_installed(name: &str) -> PluginError {
    PluginError::NotFound(format!(
        "plugin {name:?} is not installed (`rumor plugin list` shows what is)"
    ))
}

/// Writes `settings.toml` through a temporary file and a rename.
fn write_given(dir: &Path, given: &settings::Given) -> Result<(), PluginError> {
    let text = toml::to_string(given)
        .map_err(|e| PluginError::Io(format!("cannot encode the settings: {e}")))?;
    let tmp = dir.join(format!(".{SETTINGS_FILE}.{}", unique()));
    let target = dir.join(SETTINGS_FILE);
    fs::write(&tmp, text)
        .and_then(|()| fs::File::open(&tmp)?.sync_all())
        .and_then(|()| fs::rename(&tmp, &target))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            PluginError::Io(format!("cannot write {}: {e}", target.display()))
        })
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A staging folder in the plugin directory, deleted unless swapped in.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn new(parent: &Path, what: &str) -> Result<Staging, PluginError> {
        let path = parent.join(format!(".{what}-{}", unique()));
        fs::create_dir(&path)
            .map_err(|e| PluginError::Io(format!("cannot create {}: {e}", path.display())))?;
        Ok(Staging { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the staged folder at `target` in one step: a plain rename, or an exchange with
    /// the version there (which is then deleted with the staging folder).
    fn swap_into(&self, target: &Path) -> Result<(), PluginError> {
        let failed = |e: std::io::Error| {
            PluginError::Io(format!("cannot install into {}: {e}", target.display()))
        };
        if !target.exists() {
            return fs::rename(&self.path, target).map_err(failed);
        }
        let from = CString::new(self.path.as_os_str().as_bytes())
            .map_err(|_| PluginError::Io("the plugin directory's path holds a NUL byte".into()))?;
        let to = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| PluginError::Io("the plugin directory's path holds a NUL byte".into()))?;
        // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc != 0 {
            return Err(failed(std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::load::tests::folder;

    const MANIFEST: &str = r#"
name = "demo"
version = "1.0.0"
[settings.port]
type = "integer"
default = 1
[[handler]]
name = "list"
template = "list.j2"
destination = "/tmp/never-written"
"#;

    #[test]
    fn install_set_upgrade_and_remove() {
        let data = tempfile::tempdir().unwrap();
        let dir = PluginDir::in_data_dir(data.path());
        let plugin = folder(MANIFEST, &[("list.j2", "{{ settings.port }}")]);
        let source = Source::Folder(plugin.path().to_path_buf());

        let err = dir
            .install(&source, &[("port".into(), "x".into())], &[])
            .unwrap_err();
        assert!(err.to_string().starts_with("setting \"port\""), "{err}");
        assert!(
            dir.installed().is_empty(),
            "a refused install leaves nothing"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no staging left"
        );

        let loaded = dir
            .install(&source, &[("port".into(), "2".into())], &[])
            .unwrap();
        assert_eq!(loaded.handlers[0].name, "demo/list");
        assert_eq!(dir.installed().len(), 1);

        let err = dir
            .set("demo", &[("colour".into(), "red".into())], &[])
            .unwrap_err();
        assert!(err.to_string().contains("no such setting"), "{err}");
        dir.set("demo", &[("port".into(), "3".into())], &[])
            .unwrap();
        assert_eq!(
            load::read_given(&dir.folder("demo").unwrap()).unwrap()["port"],
            toml::Value::Integer(3)
        );

        // An upgrade keeps the settings and swaps the folder.
        let loaded = dir.install(&source, &[], &[]).unwrap();
        assert_eq!(loaded.given["port"], toml::Value::Integer(3));
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the old version is gone"
        );

        // A tampered copy is refused and the installed version stays.
        fs::write(plugin.path().join("list.j2"), "tampered").unwrap();
        let err = dir.install(&source, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("list.j2 has SHA-256"), "{err}");
        assert!(load::load(&dir.folder("demo").unwrap(), &[]).is_ok());

        dir.remove("demo").unwrap();
        assert!(dir.installed().is_empty());
        let err = dir.remove("demo").unwrap_err();
        assert!(err.to_string().contains("not installed"), "{err}");
    }
}
