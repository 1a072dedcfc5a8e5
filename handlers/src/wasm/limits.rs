//! What one WASM run may use ([`Limits`]), and which limit stopped a run ([`LimitHit`]), in
//! the words the log, `rumor info` and the metrics use: `out of fuel`, `memory limit 16 MiB`,
//! `output over 64 KiB`, `timed out after 2 s`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::output::OUTPUT_LIMIT;

/// Fuel a run gets unless its handler sets `fuel`: sized to roughly a tenth of a second of
/// CPU on a small server (docs/performance.md has the measurement), far more than
/// a handler that reads an event and writes an answer needs, and little enough that a runaway
/// loop stops before anyone notices.
pub const DEFAULT_FUEL: u64 = 100_000_000;

/// Linear memory a run may grow to unless its handler sets `memory`.
pub const DEFAULT_MEMORY: u64 = 16 * 1024 * 1024;

/// Bytes a run may write to stdout, and to stderr, unless its handler sets `output`.
pub const DEFAULT_OUTPUT: u64 = OUTPUT_LIMIT as u64;

/// What one run of a WASM handler may use. The wall-clock limit is the handler's `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Units of interpreter work (about one per instruction); host calls use none.
    pub fuel: u64,
    /// Bytes of linear memory.
    pub memory: u64,
    /// Bytes of stdout, and of stderr, each.
    pub output: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: DEFAULT_FUEL,
            memory: DEFAULT_MEMORY,
            output: DEFAULT_OUTPUT,
        }
    }
}

/// The limit that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Fuel,
    /// The memory limit, in bytes.
    Memory(u64),
    /// The output limit, in bytes.
    Output(u64),
    /// The wall-clock timeout.
    Time(Duration),
}

impl LimitHit {
    /// The metrics label: `fuel`, `memory`, `output` or `time`.
    pub fn label(self) -> &'static str {
        match self {
            LimitHit::Fuel => "fuel",
            LimitHit::Memory(_) => "memory",
            LimitHit::Output(_) => "output",
            LimitHit::Time(_) => "time",
        }
    }
}

impl fmt::Display for LimitHit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitHit::Fuel => f.write_str("out of fuel"),
            LimitHit::Memory(bytes) => write!(f, "memory limit {}", Bytes(*bytes)),
            LimitHit::Output(bytes) => write!(f, "output over {}", Bytes(*bytes)),
            LimitHit::Time(timeout) => write!(f, "timed out after {}", Span(*timeout)),
        }
    }
}

/// A size as people write it: `16 MiB`, `64 KiB`, `1000 bytes`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = KIB * KIB;
        match self.0 {
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n if n >= KIB && n % KIB == 0 => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// A duration as people write it: `2 s`, `1500 ms`.
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{} s", self.0.as_secs())
        } else {
            write!(f, "{} ms", self.0.as_millis())
        }
    }
}

/// Parses a size: a number of bytes, or a number with `KiB`, `MiB` or `GiB` (`"16MiB"`,
/// `"64 KiB"`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as \"16MiB\" or \"65536\""))?;
    let scale = match unit.trim() {
        "" | "B" | "bytes" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use KiB, MiB or GiB (\"16MiB\")"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_as_the_issue_words_them() {
        assert_eq!(LimitHit::Fuel.to_string(), "out of fuel");
        assert_eq!(
            LimitHit::Memory(DEFAULT_MEMORY).to_string(),
            "memory limit 16 MiB"
        );
        assert_eq!(
            LimitHit::Output(DEFAULT_OUTPUT).to_string(),
            "output over 64 KiB"
        );
        assert_eq!(
            LimitHit::Time(Duration::from_secs(2)).to_string(),
            "timed out after 2 s"
        );
        assert_eq!(
            LimitHit::Time(Duration::from_millis(1500)).to_string(),
            "timed out after 1500 ms"
        );
        assert_eq!(LimitHit::Output(1000).to_string(), "output over 1000 bytes");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("16MB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("lots").is_err());
    }
}
