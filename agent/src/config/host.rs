//! Defaults that depend on the host and user: the node name and the data directory.

use std::path::PathBuf;

/// Defaults that depend on the host: computed by [`AgentArgs::resolve`], given explicitly in tests.
///
/// [`AgentArgs::resolve`]: super::AgentArgs::resolve
#[derive(Debug, Clone)]
pub struct HostDefaults {
    /// The host name, or why it could not be read.
    pub hostname: Result<String, String>,
    pub data_dir: PathBuf,
}

impl HostDefaults {
    /// The defaults of this host and user.
    pub fn detect() -> Self {
        HostDefaults {
            hostname: hostname(),
            data_dir: default_data_dir(),
        }
    }
}

/// The default data directory: `/var/lib/rumor` for root, else `$XDG_STATE_HOME/rumor`, else
/// `$HOME/.local/state/rumor` (else `./rumor-data` when even `$HOME` is unset).
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    data_dir_for(
        uid,
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

pub(super) fn data_dir_for(
    uid: u32,
    xdg_state_home: Option<PathBuf>,
    home: Option<PathBuf>,
) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/var/lib/rumor");
    }
    // The XDG spec says relative paths in these variables are invalid and must be ignored.
    if let Some(xdg) = xdg_state_home.filter(|p| p.is_absolute()) {
        return xdg.join("rumor");
    }
    match home.filter(|p| !p.as_os_str().is_empty()) {
        Some(home) => home.join(".local/state/rumor"),
        None => PathBuf::from("rumor-data"),
    }
}

/// This host's name, from gethostname(2) or `/proc/sys/kernel/hostname`.
pub fn hostname() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length; gethostname NUL-terminates on
    // success when the name fits (and we leave room for the terminator).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..end])
            && !name.is_empty()
        {
            return Ok(name.to_owned());
        }
    }
    let gethostname_err = std::io::Error::last_os_error();
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("gethostname failed: {gethostname_err}"))
}
