//! Link options of the release `rumor` binary on GNU/Linux. Both are optional optimisations:
//! without them the binary works the same, it only takes more memory.
//!
//! - `hot-text.ld` places the functions an agent runs first in the text, so the kernel's
//!   fault-around maps little more than those (docs/hot-text.md: why, how to regenerate it).
//!   Its patterns name v0-mangled symbols (`.cargo/config.toml`); when this build's flags do
//!   not ask for v0 mangling (a RUSTFLAGS variable replaces that file's flags) it would match
//!   only the precompiled standard library, so it is left out, with a warning.
//! - `-z pack-relative-relocs` (RELR) shrinks the relocation table the dynamic loader
//!   writes through, when the glibc the binary will run on can read it (2.36 and later).
//!
//! Debug builds and other targets are left as they are: nothing here changes behaviour.
//!
//! It also embeds the plugin catalog (the workspace's `plugins/` folder) in every build: see
//! [`embed_catalog`].

use std::path::{Path, PathBuf};

fn main() {
    embed_catalog();
    println!("cargo:rerun-if-changed=hot-text.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" || profile != "release" {
        return;
    }
    let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("hot-text.ld");
    let rustflags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !mangling_is_v0(&rustflags) {
        println!(
            "cargo:warning=agent/hot-text.ld skipped: these rustflags lack \
             `-C symbol-mangling-version=v0`, which the layout's patterns rely on (RUSTFLAGS \
             replaces the flags of .cargo/config.toml). The release `rumor` works without it, \
             but each agent maps more of its text: add the flag to RUSTFLAGS (docs/hot-text.md)"
        );
    } else if script.exists() {
        println!("cargo:rustc-link-arg-bin=rumor=-Wl,-T,{}", script.display());
    }
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if native && host_glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bin=rumor=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether rustc will v0-mangle symbols: the last `-C symbol-mangling-version=` among the flags
/// (as cargo passes them to build scripts: separated by 0x1f) says `v0`. rustc's default is
/// the legacy mangling.
fn mangling_is_v0(encoded_rustflags: &str) -> bool {
    let mut flags = encoded_rustflags.split('\x1f');
    let mut v0 = false;
    while let Some(flag) = flags.next() {
        let codegen = match flag {
            "-C" | "--codegen" => flags.next(),
            _ => flag
                .strip_prefix("-C")
                .or_else(|| flag.strip_prefix("--codegen=")),
        };
        if let Some(version) = codegen.and_then(|c| c.strip_prefix("symbol-mangling-version=")) {
            v0 = version == "v0";
        }
    }
    v0
}

/// Whether this machine's glibc is 2.36 or later, the first to apply RELR relocations.
/// Asked only for native builds: the binary runs where it was built, or on the same release.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_reads_relr() -> bool {
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let mut parts = version.to_str().unwrap_or("").split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (2, 36)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn gnu_get_libc_version() -> *const std::ffi::c_char;
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_reads_relr() -> bool {
    false
}

/// Writes `$OUT_DIR/catalog.rs`: every file of every plugin folder under `../plugins` as
/// `(plugin, relative path, include_bytes!(...))`, sorted, for `src/plugin/catalog.rs`. A build
/// script rather than a crate: a few lines, and cargo rebuilds when any file of the folder
/// changes (a directory given to `rerun-if-changed` is scanned whole).
fn embed_catalog() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../plugins");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut entries = Vec::new();
    if let Ok(plugins) = std::fs::read_dir(&root) {
        for plugin in plugins.flatten() {
            if plugin.path().is_dir() {
                let name = plugin.file_name().to_string_lossy().into_owned();
                collect(&plugin.path(), &plugin.path(), &name, &mut entries);
            }
        }
    }
    entries.sort();
    let mut code = String::from("pub static FILES: &[(&str, &str, &[u8])] = &[\n");
    for (plugin, relative, path) in entries {
        code.push_str(&format!(
            "    ({plugin:?}, {relative:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("catalog.rs");
    std::fs::write(out, code).expect("cannot write catalog.rs in OUT_DIR");
}

fn collect(root: &Path, dir: &Path, plugin: &str, out: &mut Vec<(String, String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, plugin, out);
        } else if path.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let absolute = path.canonicalize().unwrap_or(path);
            out.push((plugin.to_string(), relative, absolute));
        }
    }
}
