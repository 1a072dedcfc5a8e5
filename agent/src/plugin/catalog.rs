//! The built-in catalog: the workspace's `plugins/` folders, embedded in the binary by the
//! build script, so `rumor plugin install haproxy` works offline on a fresh host.

use std::collections::BTreeMap;
use std::path::Path;

use super::PluginError;
use super::manifest::{MANIFEST, Manifest};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/catalog.rs"));
}

/// The names of the built-in plugins, sorted.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = embedded::FILES.iter().map(|(p, _, _)| *p).collect();
    names.dedup();
    names
}

/// The files of built-in plugin `name` (relative path → content), or `None`.
pub fn files(name: &str) -> Option<BTreeMap<&'static str, &'static [u8]>> {
    let files: BTreeMap<&str, &[u8]> = embedded::FILES
        .iter()
        .filter(|(p, _, _)| *p == name)
        .map(|(_, path, bytes)| (*path, *bytes))
        .collect();
    (!files.is_empty()).then_some(files)
}

/// The manifest of built-in plugin `name`.
pub fn manifest(name: &str) -> Result<Manifest, PluginError> {
    let files = files(name).ok_or_else(|| unknown(name))?;
    let text = files.get(MANIFEST).ok_or_else(|| {
        PluginError::Manifest(format!("built-in plugin {name} has no {MANIFEST}"))
    })?;
    Manifest::parse(&String::from_utf8_lossy(text))
}

/// Writes built-in plugin `name`'s files into `dir` (which exists).
pub fn write_to(name: &str, dir: &Path) -> Result<(), PluginError> {
    let files = files(name).ok_or_else(|| unknown(name))?;
    for (path, bytes) in files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| PluginError::Io(format!("cannot create {}: {e}", parent.display())))?;
        }
        std::fs::write(&target, bytes)
            .map_err(|e| PluginError::Io(format!("cannot write {}: {e}", target.display())))?;
    }
    Ok(())
}

fn unknown(name: &str) -> PluginError {
    PluginError::NotFound(format!(
        "there is no built-in plugin {name:?} (built in: {}); give a folder or a .tar.gz to \
         install another",
        names().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_plugin_is_sound_and_its_files_match_their_checksums() {
        assert!(names().contains(&"haproxy"), "{:?}", names());
        for name in names() {
            let manifest = manifest(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(manifest.name, name, "the folder is named after the plugin");
            let dir = tempfile::tempdir().unwrap();
            write_to(name, dir.path()).unwrap();
            super::super::checksum::verify(dir.path(), &manifest.files)
                .unwrap_or_else(|e| panic!("built-in plugin {name}: {e}"));
        }
    }
}
