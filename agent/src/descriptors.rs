//! The agent's file descriptors: the limit it runs under, and how many are still free.
//!
//! Why: every connection to the agent takes a descriptor, and so does every handler run (its
//! pipes, the process start). When connections — a scraper's, or a flood of idle ones — used
//! them all, `accept` kept failing and a handler could not start ("Too many open files").
//! So the agent raises its soft limit to the hard one at start ([`raise_limit`]), and its
//! listeners refuse a new connection when fewer than [`RESERVE`] descriptors are free
//! ([`free`]), keeping those for handlers and the agent's own files.

use std::io;

/// Descriptors kept free for handler runs (a few each, while they start and run) and the
/// agent's own files (journals, snapshot, keyring).
pub const RESERVE: usize = 128;

/// The soft and hard `RLIMIT_NOFILE` before and after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Raises the soft limit on open files to the hard limit.
pub fn raise_limit() -> io::Result<Raised> {
    let mut limit = get()?;
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass; it has no other preconditions.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Raised {
        before,
        after: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// The soft limit on open files.
pub fn limit() -> io::Result<u64> {
    Ok(get()?.rlim_cur)
}

fn get() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass, which is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Descriptors open in this process now (the entries of `/proc/self/fd`, less the one the
/// listing itself holds).
pub fn open() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// Descriptors this process may still open. `None` when that cannot be read (no `/proc`):
/// then nothing is refused on its account.
pub fn free() -> Option<usize> {
    let limit = usize::try_from(limit().ok()?).unwrap_or(usize::MAX);
    Some(limit.saturating_sub(open().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_descriptors_are_counted() {
        let files: Vec<std::fs::File> = (0..5)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        // Other tests open and close files meanwhile: at least ours are open.
        assert!(open().unwrap() >= files.len());
        assert!(free().unwrap() < limit().unwrap() as usize);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = limit().unwrap();
        let raised = raise_limit().unwrap();
        assert_eq!(raised.before, before);
        assert_eq!(raised.after, raised.hard);
        assert!(raised.after >= before);
    }
}
