//! The WASM keys of a `[[handler]]` table (`wasm`, `fuel`, `memory`, `output`, `dirs`,
//! `host_env`; docs/wasm.md) turned into a [`WasmConfig`]. Paths are relative to the table's
//! folder (the config file's, or the plugin's), and a plugin's module carries the SHA-256 its
//! manifest lists.

use serde::Deserialize;

use rumor_handlers::wasm::limits::parse_bytes;
use rumor_handlers::wasm::{DirGrant, WasmConfig};

use super::handlers::TableContext;

/// A size as a string with a unit ("16MiB") or a TOML integer (bytes).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Size {
    Text(String),
    Bytes(u64),
}

impl Size {
    fn bytes(&self, key: &str) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(text) => parse_bytes(text).map_err(|e| format!("{key}: {e}")),
        }
    }
}

/// One granted directory of a WASM handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DirTable {
    /// The directory on the host (relative: to the config file's folder, or the plugin's).
    host: String,
    /// The path the module opens it by [default: the host path].
    guest: Option<String>,
    /// The module may change what is in it [default: false, read-only].
    #[serde(default)]
    writable: bool,
}

/// The WASM-only keys, for the error when another kind of handler sets one.
pub(super) const WASM_KEYS: [&str; 5] = ["fuel", "memory", "output", "dirs", "host_env"];

/// A table's WASM keys, as read.
pub(super) struct WasmKeys<'a> {
    pub fuel: Option<u64>,
    pub memory: Option<&'a Size>,
    pub output: Option<&'a Size>,
    pub dirs: &'a [DirTable],
    pub host_env: &'a [String],
}

/// The handler's settings: `module` and the keys, on the defaults of [`WasmConfig::new`].
pub(super) fn config(
    module: &str,
    keys: &WasmKeys<'_>,
    context: &TableContext<'_>,
) -> Result<WasmConfig, String> {
    if module.trim().is_empty() {
        return Err("`wasm` is empty; set it to the module's file".into());
    }
    let mut config = WasmConfig::new(context.base_dir.join(module));
    config.sha256 = context
        .checksums
        .get(module.trim_start_matches("./"))
        .cloned();
    if let Some(fuel) = keys.fuel {
        config.limits.fuel = fuel;
    }
    if let Some(memory) = keys.memory {
        config.limits.memory = memory.bytes("memory")?;
    }
    if let Some(output) = keys.output {
        config.limits.output = output.bytes("output")?;
    }
    config.grants.dirs = keys
        .dirs
        .iter()
        .map(|dir| DirGrant {
            host: context.base_dir.join(&dir.host),
            guest: dir.guest.clone().unwrap_or_else(|| dir.host.clone()),
            writable: dir.writable,
        })
        .collect();
    config.grants.host_env = keys.host_env.to_vec();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::ConfigFile;
    use crate::config::handlers::from_file;

    const MODULE: &str = r#"(module (func (export "_start")) (memory (export "memory") 1))"#;

    fn load(dir: &Path, text: &str) -> Result<Vec<rumor_handlers::HandlerConfig>, String> {
        let file = ConfigFile::parse(&dir.join("rumor.toml"), text.to_string())
            .map_err(|e| e.to_string())?;
        from_file(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn wasm_tables_carry_limits_and_grants_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("h.wat"), MODULE).unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let handlers = load(
            dir.path(),
            r#"
[[handler]]
name = "w"
wasm = "h.wat"
fuel = 1000
memory = "1MiB"
output = 4096
dirs = [{ host = "data", guest = "/data", writable = true }, { host = "/tmp" }]
host_env = ["TZ"]
"#,
        )
        .unwrap();
        let w = handlers[0].runtime.wasm().expect("a wasm handler");
        assert_eq!(w.module, dir.path().join("h.wat"));
        assert_eq!(
            (w.limits.fuel, w.limits.memory, w.limits.output),
            (1000, 1 << 20, 4096)
        );
        assert_eq!(w.grants.dirs[0].host, dir.path().join("data"));
        assert!(w.grants.dirs[0].writable);
        assert_eq!(w.grants.dirs[1].guest, "/tmp");
        assert!(!w.grants.dirs[1].writable);
        assert_eq!(w.grants.host_env, ["TZ"]);
        assert_eq!(
            handlers[0].runtime.to_string(),
            format!("wasm {}", w.module.display())
        );
    }

    #[test]
    fn wrong_wasm_tables_say_what_to_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("h.wat"), MODULE).unwrap();
        std::fs::write(dir.path().join("lib.wat"), "(module)").unwrap();
        let err = load(dir.path(), "[[handler]]\ncommand = \"x\"\nfuel = 5\n").unwrap_err();
        assert!(err.contains("`fuel` is a WASM setting"), "{err}");
        let err = load(
            dir.path(),
            "[[handler]]\nwasm = \"h.wat\"\ndestination = \"/x\"\n",
        )
        .unwrap_err();
        assert!(err.contains("`destination` is a template setting"), "{err}");
        let err = load(
            dir.path(),
            "[[handler]]\nwasm = \"h.wat\"\ncommand = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.contains("sets both `command` and `wasm`"), "{err}");
        let err = load(dir.path(), "[[handler]]\nwasm = \"missing.wasm\"\n").unwrap_err();
        assert!(
            err.contains("cannot read module") && err.contains("missing.wasm"),
            "{err}"
        );
        let err = load(dir.path(), "[[handler]]\nwasm = \"lib.wat\"\n").unwrap_err();
        assert!(err.contains("exports no _start"), "{err}");
        let err = load(
            dir.path(),
            "[[handler]]\nwasm = \"h.wat\"\nmemory = \"16MB\"\n",
        )
        .unwrap_err();
        assert!(err.contains("unknown unit"), "{err}");
        let err = load(dir.path(), "[[handler]]\nwasm = \"h.wat\"\nfuel = 0\n").unwrap_err();
        assert!(err.contains("above zero"), "{err}");
    }
}
