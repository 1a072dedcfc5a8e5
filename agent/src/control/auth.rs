//! The control API token: where it comes from (a value or a file), how it is checked (SHA-256
//! digests compared in fixed time), and how requests carry it (`Authorization: Bearer TOKEN`).
//!
//! TCP control requires a token; a Unix socket needs none (its file mode, 0600, is the access
//! control), and a token sent there is ignored.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use ring::digest::{SHA256, digest};

/// Longest token accepted (it travels in an HTTP header).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Where a token comes from: given directly (`--control-token`, `RUMOR_CONTROL_TOKEN`,
/// `control_token`) or read from a file (`--control-token-file`, `control_token_file`).
/// `Debug` never shows the token itself.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    Value(String),
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Value(_) => f.write_str("Value(<redacted>)"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Why a token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the control token is empty: set a long random value, e.g. `openssl rand -hex 32`")]
    Empty,
    #[error("the control token is {len} bytes long: the limit is {MAX_TOKEN_BYTES}")]
    TooLong { len: usize },
    #[error(
        "the control token contains a space, a control character or a non-ASCII character: \
         use printable ASCII only, e.g. `openssl rand -hex 32`"
    )]
    BadCharacter,
    #[error("cannot read the control token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the control token file {} is readable by other users (mode {mode:04o}): \
         run `chmod 600 {}` so that only its owner can read it",
        path.display(),
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the control token file {}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<TokenError>,
    },
}

impl TokenSource {
    /// The token a `--control-token` / `--control-token-file` pair (or `control_token` /
    /// `control_token_file` keys) gives: the value if set, else the file. Whoever reads the
    /// pair refuses both being set.
    pub fn from_value_or_file(value: Option<String>, file: Option<PathBuf>) -> Option<Self> {
        value
            .map(TokenSource::Value)
            .or(file.map(TokenSource::File))
    }

    /// The token text: the value, or the file's contents without surrounding whitespace. A
    /// file must not be readable by group or others.
    pub fn read(&self) -> Result<String, TokenError> {
        match self {
            TokenSource::Value(value) => {
                check_token(value)?;
                Ok(value.clone())
            }
            TokenSource::File(path) => {
                let text = read_token_file(path)?;
                check_token(&text).map_err(|e| TokenError::InFile {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                Ok(text)
            }
        }
    }
}

fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let read_error = |source| TokenError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    Ok(text.trim().to_string())
}

/// A token must be printable ASCII without spaces (so it fits an `Authorization` header as
/// written), 1 to [`MAX_TOKEN_BYTES`] bytes.
fn check_token(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong { len: token.len() });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::BadCharacter);
    }
    Ok(())
}

/// The token the server expects, kept only as its SHA-256 digest.
#[derive(Clone)]
pub struct ControlToken {
    digest: [u8; 32],
}

impl fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlToken(<redacted>)")
    }
}

impl ControlToken {
    /// Checks and keeps a token.
    pub fn new(token: &str) -> Result<Self, TokenError> {
        check_token(token)?;
        Ok(ControlToken {
            digest: sha256(token.as_bytes()),
        })
    }

    /// Reads and keeps the token from its source.
    pub fn load(source: &TokenSource) -> Result<Self, TokenError> {
        Self::new(&source.read()?)
    }

    /// Whether `presented` is the token. Both sides are hashed first, so the comparison takes
    /// the same time whatever the length or content of `presented`.
    pub fn matches(&self, presented: &[u8]) -> bool {
        fixed_time_eq(&self.digest, &sha256(presented))
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, header: Option<&HeaderValue>) -> Result<(), AuthFailure> {
        let presented = bearer(header).ok_or(AuthFailure::Missing)?;
        if self.matches(presented) {
            Ok(())
        } else {
            Err(AuthFailure::Wrong)
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token that is not the agent's.
    Wrong,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing control token",
            AuthFailure::Wrong => "wrong control token",
        }
    }
}

/// The control API's gate for TCP requests: the expected token, how many requests it refused
/// (for `rumor_control_unauthorized_total`) and a limit on how often refusals are logged.
/// Clones share the counter.
#[derive(Debug, Clone, Default)]
pub struct ControlAuth {
    token: Option<ControlToken>,
    refused: Arc<AtomicU64>,
    log: Arc<Mutex<RefusalLog>>,
}

/// At most [`REFUSAL_LOG_BURST`] WARN lines per [`REFUSAL_LOG_WINDOW`]; the first line of the
/// next window counts what was skipped.
#[derive(Debug, Default)]
struct RefusalLog {
    window_start: Option<Instant>,
    logged: u32,
    skipped: u64,
}

/// Refusals logged per window, at most.
pub const REFUSAL_LOG_BURST: u32 = 10;
/// The window over which [`REFUSAL_LOG_BURST`] applies.
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

impl ControlAuth {
    /// A gate expecting `token` (`None`: no token is set, so TCP control cannot be served).
    pub fn new(token: Option<ControlToken>) -> Self {
        ControlAuth {
            token,
            ..ControlAuth::default()
        }
    }

    /// Whether a token is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Lets a TCP request from `peer` through if its `Authorization` header carries the token;
    /// otherwise counts and logs the refusal (rate-limited) and says why.
    pub fn admit(
        &self,
        peer: SocketAddr,
        what: &str,
        header: Option<&HeaderValue>,
    ) -> Result<(), AuthFailure> {
        let result = match &self.token {
            Some(token) => token.check(header),
            // Unreachable through `serve`, which refuses TCP without a token; fail closed.
            None => Err(AuthFailure::Wrong),
        };
        if let Err(failure) = result {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.log_refusal(peer, what, failure);
        }
        result
    }

    fn log_refusal(&self, peer: SocketAddr, what: &str, failure: AuthFailure) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let new_window = log
            .window_start
            .is_none_or(|start| now.duration_since(start) >= REFUSAL_LOG_WINDOW);
        if new_window {
            log.window_start = Some(now);
            log.logged = 0;
        }
        if log.logged >= REFUSAL_LOG_BURST {
            log.skipped += 1;
            return;
        }
        log.logged += 1;
        let skipped = std::mem::take(&mut log.skipped);
        drop(log);
        let more = if skipped > 0 {
            format!(" ({skipped} more refused requests were not logged)")
        } else {
            String::new()
        };
        tracing::warn!(
            "control API: refused {what} from {peer}: {}{more}",
            failure.as_str()
        );
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme is case-insensitive).
pub fn bearer(header: Option<&HeaderValue>) -> Option<&[u8]> {
    let value = header?.as_bytes();
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

/// Equality of two digests in time independent of where they differ.
fn fixed_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn the_right_token_matches_and_others_do_not() {
        let token = ControlToken::new("s3cret-token").unwrap();
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-tokeN"));
        assert!(!token.matches(b"s3cret-token "));
        assert!(!token.matches(b""));
        assert!(!token.matches(&[b'x'; 10_000]));
        assert_eq!(format!("{token:?}"), "ControlToken(<redacted>)");
    }

    #[test]
    fn requests_carry_the_token_as_a_bearer_header() {
        let token = ControlToken::new("abc").unwrap();
        assert_eq!(token.check(Some(&header("Bearer abc"))), Ok(()));
        assert_eq!(token.check(Some(&header("bearer  abc "))), Ok(()));
        assert_eq!(
            token.check(Some(&header("Bearer abd"))),
            Err(AuthFailure::Wrong)
        );
        assert_eq!(token.check(None), Err(AuthFailure::Missing));
        assert_eq!(
            token.check(Some(&header("Basic YWJj"))),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            token.check(Some(&header("Bearer "))),
            Err(AuthFailure::Missing)
        );
        assert_eq!(token.check(Some(&header("abc"))), Err(AuthFailure::Missing));
    }

    #[test]
    fn tokens_are_printable_ascii_of_bounded_length() {
        assert!(matches!(ControlToken::new(""), Err(TokenError::Empty)));
        assert!(matches!(
            ControlToken::new("has space"),
            Err(TokenError::BadCharacter)
        ));
        assert!(matches!(
            ControlToken::new("tab\there"),
            Err(TokenError::BadCharacter)
        ));
        assert!(matches!(
            ControlToken::new("é"),
            Err(TokenError::BadCharacter)
        ));
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert!(matches!(
            ControlToken::new(&long),
            Err(TokenError::TooLong { .. })
        ));
        assert!(ControlToken::new(&long[1..]).is_ok());
    }

    #[test]
    fn a_token_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let source = TokenSource::File(path.clone());
        let err = source.read().unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, TokenError::Exposed { mode: 0o644, .. }),
            "{text}"
        );
        assert!(
            text.contains("readable by other users (mode 0644)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("chmod 600 {}", path.display())),
            "{text}"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(source.read().unwrap(), "from-a-file");
        assert!(ControlToken::load(&source).unwrap().matches(b"from-a-file"));

        std::fs::write(&path, "\n").unwrap();
        let err = source.read().unwrap_err().to_string();
        assert!(err.contains("control token is empty"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");

        let missing = TokenSource::File(dir.path().join("nope"));
        let err = missing.read().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read the control token file"),
            "{err}"
        );
    }

    #[test]
    fn refusals_are_counted_and_their_log_lines_limited() {
        let auth = ControlAuth::new(Some(ControlToken::new("abc").unwrap()));
        let peer: SocketAddr = "10.0.0.9:4242".parse().unwrap();
        let good = header("Bearer abc");
        assert!(auth.admit(peer, "GET /v1/info", Some(&good)).is_ok());
        for _ in 0..15 {
            assert_eq!(
                auth.admit(peer, "GET /v1/info", None),
                Err(AuthFailure::Missing)
            );
        }
        assert_eq!(auth.clone().refused(), 15);
        let log = auth.log.lock().unwrap();
        assert_eq!((log.logged, log.skipped), (REFUSAL_LOG_BURST, 5));
        drop(log);
        // Without a token nothing gets through (serve refuses that setup anyway).
        let none = ControlAuth::default();
        assert!(none.admit(peer, "GET /v1/info", Some(&good)).is_err());
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let source = TokenSource::Value("hunter2".into());
        assert!(!format!("{source:?}").contains("hunter2"));
    }
}
