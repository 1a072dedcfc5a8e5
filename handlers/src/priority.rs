//! CPU priority: the agent's own threads may run a few nice levels above its handlers.
//!
//! Why: a host busy with handler runs (fifty `sh` processes after a deploy event, or one handler
//! that compiles something) must not delay the agent's gossip. A relay that waits for a CPU
//! slows the event for every member behind it, and a probe answered late makes others suspect
//! this node. Cluster daemons that guard membership do the same (corosync runs real-time).
//!
//! How: Linux keeps a nice value per thread and a new thread or process inherits its creator's.
//! [`boost`] lowers the nice value of the calling thread (call it before the runtime starts its
//! threads, which then inherit it). Handlers must not inherit the boost: a daemon a handler
//! starts would keep it forever. So while a boost is in force, [`spawn`](crate::shell) starts
//! each handler from a short-lived thread that first returns to the agent's original nice
//! value; the handler then runs exactly as it would without the boost.
//!
//! Lowering a nice value needs `CAP_SYS_NICE` (root) or an `RLIMIT_NICE` that allows it;
//! without either, [`boost`] fails and nothing changes.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// No boost in force.
const NONE: i32 = i32::MIN;

/// The nice value the agent started with, while a boost is in force.
static ORIGINAL: AtomicI32 = AtomicI32::new(NONE);

/// Lowers the calling thread's nice value by `levels` (not below -20), so threads it creates
/// afterwards run ahead of the handlers. Returns the nice values of the agent (boosted) and of
/// its handlers (the original).
pub fn boost(levels: u8) -> io::Result<(i32, i32)> {
    let original = current()?;
    let boosted = (original - i32::from(levels)).max(-20);
    set_current(boosted)?;
    ORIGINAL.store(original, Ordering::Relaxed);
    Ok((boosted, original))
}

/// The nice value handlers run at while a boost is in force (the agent's original one).
pub fn handler_nice() -> Option<i32> {
    match ORIGINAL.load(Ordering::Relaxed) {
        NONE => None,
        nice => Some(nice),
    }
}

/// The calling thread's nice value.
pub fn current() -> io::Result<i32> {
    // getpriority can return -1 as a value: errno tells an error apart.
    // SAFETY: errno is thread-local; getpriority has no memory-safety preconditions.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, thread_id());
        match *libc::__errno_location() {
            0 => Ok(nice),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Sets the calling thread's nice value (raising it is always allowed).
pub fn set_current(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, thread_id(), nice) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// On Linux, PRIO_PROCESS with a thread id addresses that one thread.
fn thread_id() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_lower_its_own_priority() {
        // Runs on a thread of its own: the nice value is per thread.
        std::thread::spawn(|| {
            let before = current().unwrap();
            set_current(before + 1).unwrap();
            assert_eq!(current().unwrap(), before + 1);
        })
        .join()
        .unwrap();
    }
}
