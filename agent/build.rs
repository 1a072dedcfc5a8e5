//! Link options of the release `rumor` binary on GNU/Linux (see README, Performance):
//!
//! - `hot-text.ld` places the functions an agent runs first in the text, so the kernel's
//!   fault-around (64 KiB around each page touched) maps little more than those
//!   (regenerate it with `cargo run --release -p rumor-tests --bin hot-text`);
//! - `-z pack-relative-relocs` (RELR) shrinks the relocation table the dynamic loader
//!   writes through, when the glibc the binary will run on can read it (2.36 and later).
//!
//! Debug builds and other targets are left as they are: nothing here changes behaviour.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=hot-text.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if target_os != "linux" || target_env != "gnu" || profile != "release" {
        return;
    }
    let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("hot-text.ld");
    if script.exists() {
        println!("cargo:rustc-link-arg-bin=rumor=-Wl,-T,{}", script.display());
    }
    let native = std::env::var("HOST").ok() == std::env::var("TARGET").ok();
    if native && host_glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bin=rumor=-Wl,-z,pack-relative-relocs");
    }
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
