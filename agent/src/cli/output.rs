//! Writing command output: stdout that tolerates a closed pipe (`rumor members | head -1`),
//! JSON, and aligned text columns.

use std::fmt::Display;
use std::io::{self, Write};

use serde::Serialize;

/// Where a command writes its data. Errors are `io::Error`s so that a closed pipe can be
/// recognised by [`is_broken_pipe`] and end the program quietly.
pub struct Output {
    w: Box<dyn Write + Send>,
}

impl Output {
    pub fn stdout() -> Self {
        Output {
            w: Box::new(io::stdout()),
        }
    }

    /// Output into `w` (a buffer whose text is reshaped, a test's capture).
    pub fn to(w: impl Write + Send + 'static) -> Self {
        Output { w: Box::new(w) }
    }

    /// Writes one line.
    pub fn line(&mut self, text: impl Display) -> io::Result<()> {
        writeln!(self.w, "{text}")
    }

    /// Writes `text` as it is (a rendered file or config keeps its own line ends).
    pub fn write_str(&mut self, text: &str) -> io::Result<()> {
        self.w.write_all(text.as_bytes())
    }

    /// Writes `value` as pretty-printed JSON followed by a newline.
    pub fn json<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.w, value)?;
        writeln!(self.w)
    }

    /// Writes text lines aligned in columns separated by two spaces; trailing blanks trimmed.
    pub fn columns(&mut self, rows: &[Vec<String>]) -> io::Result<()> {
        for line in align(rows) {
            self.line(line)?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// The width of each column: its widest cell, in characters.
pub fn column_widths(rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    widths
}

/// Pads every column but the last to its widest cell.
pub fn align(rows: &[Vec<String>]) -> Vec<String> {
    let widths = column_widths(rows);
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 < row.len() {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
                } else {
                    line.push_str(cell);
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// Whether `err` was caused by writing to a closed pipe (the reader went away: not a failure).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone away.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    fn write_members(out: &mut Output) -> anyhow::Result<()> {
        out.line("a  10.0.0.1:7946  alive")?;
        Ok(())
    }

    #[test]
    fn closed_pipe_is_an_error_recognised_as_quiet() {
        let mut out = Output::to(ClosedPipe);
        let err = write_members(&mut out).unwrap_err();
        assert!(is_broken_pipe(&err));
        let err = anyhow::Error::from(out.json(&serde_json::json!({"a": 1})).unwrap_err());
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("no member named \"x\"")));
        assert!(!is_broken_pipe(
            &io::Error::from(io::ErrorKind::NotFound).into()
        ));
    }

    #[test]
    fn columns_align_and_trim() {
        let rows = vec![
            vec![
                "a".to_string(),
                "10.0.0.1:7946".into(),
                "alive".into(),
                "".into(),
            ],
            vec![
                "web-10".to_string(),
                "[::1]:7946".into(),
                "failed".into(),
                "role=web".into(),
            ],
        ];
        assert_eq!(
            align(&rows),
            vec![
                "a       10.0.0.1:7946  alive",
                "web-10  [::1]:7946     failed  role=web",
            ]
        );
    }
}
