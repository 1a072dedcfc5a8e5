//! Compiled modules: each handler's module is compiled once and kept ([`ModuleCache`]), and
//! compiled again only when its file changes. Every run instantiates the kept module afresh.
//!
//! A change is seen by the file's size, inode and modification and change times, read at
//! each run (one `stat`): replacing the file, whether in place or by a rename over it, is
//! picked up by the next run without a reload. A plugin's module carries the SHA-256 its
//! manifest lists, checked at every compile, so a module changed after the plugin was
//! checked is refused rather than run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ring::digest::{SHA256, digest};
use wasmi::{Config, Engine, ExternType, Module};

/// The one engine every module is compiled for, with fuel metering on.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::default();
        config.consume_fuel(true);
        Engine::new(&config)
    })
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Fingerprint {
    fn of(path: &Path) -> Result<Fingerprint, String> {
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read module {}: {e}", path.display()))?;
        Ok(Fingerprint {
            len: meta.len(),
            ino: meta.ino(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}

/// One handler's module, compiled when first needed and whenever its file changed.
pub(crate) struct ModuleCache {
    path: PathBuf,
    sha256: Option<String>,
    current: Mutex<Option<(Fingerprint, Module)>>,
}

impl ModuleCache {
    pub fn new(path: PathBuf, sha256: Option<String>) -> ModuleCache {
        ModuleCache {
            path,
            sha256,
            current: Mutex::new(None),
        }
    }

    /// The module as the file is now, and whether it was compiled for this call.
    pub fn get(&self) -> Result<(Module, bool), String> {
        let fingerprint = Fingerprint::of(&self.path)?;
        let mut current = crate::lock(&self.current);
        if let Some((seen, module)) = current.as_ref()
            && *seen == fingerprint
        {
            return Ok((module.clone(), false));
        }
        let module = compile(&self.path, self.sha256.as_deref())?;
        *current = Some((fingerprint, module.clone()));
        Ok((module, true))
    }
}

/// Reads and compiles the module at `path` (binary `.wasm` or text `.wat`), checking its
/// SHA-256 when one is given and that it is a WASI command (it exports `_start`).
pub(crate) fn compile(path: &Path, sha256: Option<&str>) -> Result<Module, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read module {}: {e}", path.display()))?;
    if let Some(want) = sha256 {
        let have: String = digest(&SHA256, &bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !have.eq_ignore_ascii_case(want) {
            return Err(format!(
                "module {} has SHA-256 {have}, not the {want} its plugin lists; reinstall the plugin",
                path.display()
            ));
        }
    }
    let module = Module::new(engine(), &bytes)
        .map_err(|e| format!("cannot compile module {}: {e}", path.display()))?;
    match module.get_export("_start") {
        Some(ExternType::Func(_)) => Ok(module),
        _ => Err(format!(
            "module {} is not a WASI command: it exports no _start function (build it as a \
             binary for wasm32-wasip1, not as a library)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMAND: &str = r#"(module (func (export "_start")) (memory (export "memory") 1))"#;

    #[test]
    fn a_changed_file_is_compiled_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wat");
        std::fs::write(&path, COMMAND).unwrap();
        let cache = ModuleCache::new(path.clone(), None);
        assert!(cache.get().unwrap().1, "first use compiles");
        assert!(!cache.get().unwrap().1, "unchanged: kept");
        // A new file renamed over the old one, as deploy tools do.
        let next = dir.path().join("next.wat");
        std::fs::write(&next, format!("{COMMAND}\n")).unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert!(cache.get().unwrap().1, "changed: compiled again");
        std::fs::write(&path, "(module)").unwrap();
        let err = cache.get().unwrap_err();
        assert!(err.contains("exports no _start"), "{err}");
    }

    #[test]
    fn a_wrong_checksum_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.wat");
        std::fs::write(&path, COMMAND).unwrap();
        let err = compile(&path, Some(&"0".repeat(64))).unwrap_err();
        assert!(err.contains("reinstall the plugin"), "{err}");
        let err = compile(&dir.path().join("missing.wasm"), None).unwrap_err();
        assert!(err.contains("cannot read module"), "{err}");
    }
}
