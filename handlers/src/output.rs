//! Bounded output capture: what a run keeps of a stream it reads (a shell's stdout and stderr,
//! a WASM module's output pipe), so that a handler that writes 100 MB costs [`OUTPUT_LIMIT`]
//! bytes per stream, and its end (where the error usually is) is what is kept.

/// How many bytes of stdout, and of stderr, a run keeps (the last ones).
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// Keeps the last `limit` bytes written to it.
#[derive(Debug)]
pub struct TailBuffer {
    buf: Vec<u8>,
    limit: usize,
    total: u64,
}

impl TailBuffer {
    /// An empty buffer that keeps the last `limit` bytes ([`OUTPUT_LIMIT`] for a run's output).
    pub fn new(limit: usize) -> TailBuffer {
        TailBuffer {
            buf: Vec::new(),
            limit,
            total: 0,
        }
    }

    /// Adds `data` after what was written before.
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        if data.len() >= self.limit {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.limit..]);
            return;
        }
        self.buf.extend_from_slice(data);
        // Compact only when twice the limit is reached, so each byte is moved O(1) times.
        if self.buf.len() > 2 * self.limit {
            self.buf.drain(..self.buf.len() - self.limit);
        }
    }

    /// The kept bytes, and whether anything was cut off the front.
    pub fn finish(mut self) -> (Vec<u8>, bool) {
        if self.buf.len() > self.limit {
            self.buf.drain(..self.buf.len() - self.limit);
        }
        (self.buf, self.total > self.limit as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_buffer_keeps_the_last_bytes() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"ab");
        assert_eq!(tail.finish(), (b"ab".to_vec(), false));

        let mut tail = TailBuffer::new(4);
        for chunk in [&b"abc"[..], b"def", b"gh", b"i"] {
            tail.push(chunk);
        }
        assert_eq!(tail.finish(), (b"fghi".to_vec(), true));

        let mut tail = TailBuffer::new(4);
        tail.push(b"x");
        tail.push(b"0123456789");
        assert_eq!(tail.finish(), (b"6789".to_vec(), true));
    }
}
