//! Where the control API listens and where clients look for it: a Unix socket path or a
//! TCP `HOST:PORT` (which requires a token, see `auth.rs`), and the default location under
//! the agent's data directory.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the control API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEndpoint {
    /// A Unix domain socket at this path.
    Unix(PathBuf),
    /// A TCP address; the agent serves it only with a control token set.
    Tcp(SocketAddr),
}

/// Why a string is not a usable control endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "invalid control endpoint {0:?}: expected a socket path (containing '/') or IP:PORT \
         (or localhost:PORT)"
    )]
    Invalid(String),
}

impl FromStr for ControlEndpoint {
    type Err = EndpointError;

    /// `unix:PATH` or anything containing `/` is a socket path; otherwise `HOST:PORT`, where HOST
    /// is an IP address (`127.0.0.1`, `10.0.0.5`, `[::1]`) or `localhost`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(EndpointError::Invalid(s.to_string()));
            }
            return Ok(ControlEndpoint::Unix(PathBuf::from(path)));
        }
        if s.contains('/') {
            return Ok(ControlEndpoint::Unix(PathBuf::from(s)));
        }
        let addr = match s.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => match s.rsplit_once(':') {
                Some(("localhost", port)) => {
                    let port = port
                        .parse::<u16>()
                        .map_err(|_| EndpointError::Invalid(s.to_string()))?;
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
                }
                _ => return Err(EndpointError::Invalid(s.to_string())),
            },
        };
        Ok(ControlEndpoint::Tcp(addr))
    }
}

impl fmt::Display for ControlEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlEndpoint::Unix(path) => write!(f, "{}", path.display()),
            ControlEndpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// The agent's data directory when none is configured: `$RUMOR_DATA_DIR` if set, else
/// `/var/lib/rumor` for root, else `$XDG_STATE_HOME/rumor` or `$HOME/.local/state/rumor`.
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    data_dir_from(|name| std::env::var_os(name), euid)
}

/// The control socket clients use when neither `--control` nor `RUMOR_CONTROL` is given:
/// `control.sock` in [`default_data_dir`].
pub fn default_control_endpoint() -> ControlEndpoint {
    ControlEndpoint::Unix(control_socket_in(&default_data_dir()))
}

/// The control socket path inside a data directory.
pub fn control_socket_in(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

fn data_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>, euid: u32) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("RUMOR_DATA_DIR") {
        return dir;
    }
    if euid == 0 {
        return PathBuf::from("/var/lib/rumor");
    }
    if let Some(state) = set("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return state.join("rumor");
    }
    if let Some(home) = set("HOME") {
        return home.join(".local/state/rumor");
    }
    std::env::temp_dir().join(format!("rumor-{euid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ControlEndpoint, EndpointError> {
        s.parse()
    }

    #[test]
    fn paths_are_unix_sockets() {
        assert_eq!(
            parse("/var/lib/rumor/control.sock").unwrap(),
            ControlEndpoint::Unix("/var/lib/rumor/control.sock".into())
        );
        assert_eq!(
            parse("./ctl.sock").unwrap(),
            ControlEndpoint::Unix("./ctl.sock".into())
        );
        assert_eq!(
            parse("unix:ctl.sock").unwrap(),
            ControlEndpoint::Unix("ctl.sock".into())
        );
        assert!(parse("unix:").is_err());
    }

    #[test]
    fn loopback_tcp_is_accepted() {
        assert_eq!(
            parse("127.0.0.1:7373").unwrap(),
            ControlEndpoint::Tcp("127.0.0.1:7373".parse().unwrap())
        );
        assert_eq!(
            parse("[::1]:7373").unwrap(),
            ControlEndpoint::Tcp("[::1]:7373".parse().unwrap())
        );
        assert_eq!(
            parse("localhost:7373").unwrap(),
            ControlEndpoint::Tcp("127.0.0.1:7373".parse().unwrap())
        );
        assert_eq!(
            parse("127.0.0.1:7373").unwrap().to_string(),
            "127.0.0.1:7373"
        );
    }

    #[test]
    fn any_ip_is_a_tcp_endpoint() {
        // Whether TCP may be served (it needs a token) is the server's decision.
        for s in ["0.0.0.0:7373", "10.0.0.5:7373", "[::]:7373"] {
            assert_eq!(
                parse(s).unwrap(),
                ControlEndpoint::Tcp(s.parse().unwrap()),
                "{s}"
            );
        }
    }

    #[test]
    fn garbage_is_invalid() {
        for s in [
            "",
            "control.sock",
            "localhost",
            "example.com:80",
            "127.0.0.1:99999",
        ] {
            assert!(matches!(parse(s), Err(EndpointError::Invalid(_))), "{s:?}");
        }
    }

    #[test]
    fn data_dir_follows_env_then_uid_then_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let all = &[
            ("RUMOR_DATA_DIR", "/srv/rumor"),
            ("XDG_STATE_HOME", "/home/u/.state"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(data_dir_from(env(all), 1000), PathBuf::from("/srv/rumor"));
        let no_override = &[("XDG_STATE_HOME", "/home/u/.state"), ("HOME", "/home/u")];
        assert_eq!(
            data_dir_from(env(no_override), 0),
            PathBuf::from("/var/lib/rumor")
        );
        assert_eq!(
            data_dir_from(env(no_override), 1000),
            PathBuf::from("/home/u/.state/rumor")
        );
        let home_only = &[("XDG_STATE_HOME", ""), ("HOME", "/home/u")];
        assert_eq!(
            data_dir_from(env(home_only), 1000),
            PathBuf::from("/home/u/.local/state/rumor")
        );
    }
}
