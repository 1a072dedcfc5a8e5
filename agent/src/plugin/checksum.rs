//! The SHA-256 of every file of a plugin, as its manifest's `[files]` lists them: a plugin
//! whose files differ from its manifest in any way (a file changed, missing, or one the
//! manifest does not list) is refused, so what runs is exactly what was shipped (and, with a
//! signature, what its author signed).

use std::collections::BTreeMap;
use std::path::Path;

use ring::digest::{SHA256, digest};

use super::PluginError;
use super::manifest::MANIFEST;
use super::settings::SETTINGS_FILE;
use super::signature::SIGNATURE;

/// Files of an installed folder that the manifest does not list: itself, its signature, and
/// the installation's settings.
const UNLISTED: [&str; 3] = [MANIFEST, SIGNATURE, SETTINGS_FILE];

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every file under `dir` except the unlisted ones, by relative path (`/`-separated), with
/// its SHA-256.
pub fn hash_folder(dir: &Path) -> Result<BTreeMap<String, String>, PluginError> {
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files)?;
    for name in UNLISTED {
        files.remove(name);
    }
    Ok(files)
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), PluginError> {
    let read = |e: std::io::Error| PluginError::Io(format!("cannot read {}: {e}", dir.display()));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(read)?
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(read)?;
        let relative = path
            .strip_prefix(root)
            .expect("walked from root")
            .to_string_lossy()
            .into_owned();
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let bytes = std::fs::read(&path)
                .map_err(|e| PluginError::Io(format!("cannot read {}: {e}", path.display())))?;
            out.insert(relative, sha256_hex(&bytes));
        } else {
            return Err(PluginError::Checksum(format!(
                "{relative} is neither a file nor a folder (a symlink?): a plugin holds plain \
                 files only"
            )));
        }
    }
    Ok(())
}

/// Checks the folder's files against the manifest's `[files]`.
pub fn verify(dir: &Path, listed: &BTreeMap<String, String>) -> Result<(), PluginError> {
    let found = hash_folder(dir)?;
    for (path, want) in listed {
        match found.get(path) {
            None => {
                return Err(PluginError::Checksum(format!(
                    "{path} is listed in [files] but missing"
                )));
            }
            Some(got) if !got.eq_ignore_ascii_case(want) => {
                return Err(PluginError::Checksum(format!(
                    "{path} has SHA-256 {got}, but the manifest says {want}: the file was \
                     changed after the manifest was written"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|p| !listed.contains_key(*p)) {
        return Err(PluginError::Checksum(format!(
            "{extra} is not listed in the manifest's [files]: list it with its SHA-256 (`rumor \
             plugin checksums DIR` prints the table) or remove it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_missing_and_unlisted_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.j2"), "a").unwrap();
        std::fs::write(dir.path().join("sub/b.sh"), "b").unwrap();
        std::fs::write(dir.path().join(MANIFEST), "ignored").unwrap();
        let listed = hash_folder(dir.path()).unwrap();
        assert_eq!(listed.keys().collect::<Vec<_>>(), ["a.j2", "sub/b.sh"]);
        assert_eq!(
            listed["a.j2"],
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        verify(dir.path(), &listed).unwrap();

        std::fs::write(dir.path().join("a.j2"), "tampered").unwrap();
        let err = verify(dir.path(), &listed).unwrap_err().to_string();
        assert!(err.contains("a.j2 has SHA-256"), "{err}");
        std::fs::write(dir.path().join("a.j2"), "a").unwrap();
        std::fs::write(dir.path().join("extra"), "x").unwrap();
        let err = verify(dir.path(), &listed).unwrap_err().to_string();
        assert!(err.contains("extra is not listed"), "{err}");
        std::fs::remove_file(dir.path().join("extra")).unwrap();
        std::fs::remove_file(dir.path().join("sub/b.sh")).unwrap();
        let err = verify(dir.path(), &listed).unwrap_err().to_string();
        assert!(err.contains("sub/b.sh is listed"), "{err}");
    }
}
