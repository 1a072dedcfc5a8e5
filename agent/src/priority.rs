//! CPU priority: the agent's gossip runs ahead of its handlers.
//!
//! Why: a host busy with handler runs (fifty `sh` processes after a deploy event, or one handler
//! that compiles something) must not delay the agent's gossip. A relay that waits for a CPU
//! slows the event for every member behind it, and a probe answered late makes others suspect
//! this node. Cluster daemons that guard membership do the same (corosync runs real-time).
//!
//! How, in two steps, each applied by the agent's main thread (the one that runs the gossip)
//! before it creates any other thread:
//!
//! * [`boost`] lowers its nice value a few levels. A nice value is a weight, not a rank: a
//!   woken handler still often gets a CPU first, so on a host busy with handler runs each
//!   relay still waits several milliseconds.
//! * [`realtime`] puts it under `SCHED_RR` at a low real-time priority, which ranks above
//!   every normal task: events then spread as fast as with no handlers at all (figures in
//!   docs/performance.md). `SCHED_RESET_ON_FORK` comes with it, so every thread and process it
//!   creates starts as a normal task again; the kernel's real-time throttling (95 % of a CPU
//!   by default) still leaves room to other tasks if the gossip ever spun.
//!
//! Handlers must not inherit either: a daemon a handler starts would keep it forever. Threads
//! the agent creates for other work return to the original nice value ([`handler_nice`],
//! [`enter_handler_priority`]): the handler thread
//! ([`HandlerThread`](rumor_handlers::HandlerThread)), which starts every handler, and the disk
//! writers ([`crate::journal`]). A handler then runs exactly as it would without either step.
//!
//! This is the agent's policy: the handlers crate only runs what it is given on the thread it
//! is given, and the agent hands [`enter_handler_priority`] to that thread when it starts it.
//!
//! Both need `CAP_SYS_NICE` (root), or an `RLIMIT_NICE` / `RLIMIT_RTPRIO` that allows them;
//! without, they fail and nothing changes.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

/// Neither step in force.
const NONE: i32 = i32::MIN;

/// The nice value the agent started with, once a step is in force.
static ORIGINAL: AtomicI32 = AtomicI32::new(NONE);

/// Lowers the calling thread's nice value by `levels` (not below -20), so threads it creates
/// afterwards run ahead of the handlers. Returns the nice values of the agent (boosted) and of
/// its handlers (the original).
pub fn boost(levels: u8) -> io::Result<(i32, i32)> {
    let original = current()?;
    let boosted = (original - i32::from(levels)).max(-20);
    set_current(boosted)?;
    remember_original(original);
    Ok((boosted, original))
}

/// Runs the calling thread under `SCHED_RR` at `priority` (1–99), with
/// `SCHED_RESET_ON_FORK`: threads and processes it creates afterwards start as normal tasks.
/// Returns the nice value handlers run at (the original).
pub fn realtime(priority: u8) -> io::Result<i32> {
    let original = handler_nice().map_or_else(current, Ok)?;
    set_realtime(priority)?;
    remember_original(original);
    Ok(original)
}

/// The system call behind [`realtime`], for the calling thread alone.
fn set_realtime(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: `param` outlives the call; sched_setscheduler has no other preconditions. Pid 0
    // is the calling thread.
    let rc =
        unsafe { libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy (`SCHED_OTHER`, `SCHED_RR`, ...), with
/// `SCHED_RESET_ON_FORK` if set.
pub fn policy() -> io::Result<i32> {
    // SAFETY: sched_getscheduler has no memory-safety preconditions; pid 0 is this thread.
    match unsafe { libc::sched_getscheduler(0) } {
        -1 => Err(io::Error::last_os_error()),
        policy => Ok(policy),
    }
}

fn remember_original(nice: i32) {
    let _ = ORIGINAL.compare_exchange(NONE, nice, Ordering::Relaxed, Ordering::Relaxed);
}

/// The nice value handlers run at while either step is in force (the agent's original one).
pub fn handler_nice() -> Option<i32> {
    match ORIGINAL.load(Ordering::Relaxed) {
        NONE => None,
        nice => Some(nice),
    }
}

/// Returns the calling thread to the nice value handlers run at, when either step is in force
/// (otherwise it already runs at it). For the threads the agent creates for handlers and other
/// work that must not run ahead of them.
pub fn enter_handler_priority() -> io::Result<()> {
    handler_nice().map_or(Ok(()), set_current)
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

    #[test]
    fn a_realtime_thread_creates_normal_ones() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("RUMOR_REQUIRE_ALL").is_none(),
                "real-time scheduling needs root, and RUMOR_REQUIRE_ALL is set"
            );
            eprintln!("skipped: real-time scheduling needs root");
            return;
        }
        std::thread::spawn(|| {
            set_realtime(1).unwrap();
            assert_eq!(
                policy().unwrap(),
                libc::SCHED_RR | libc::SCHED_RESET_ON_FORK
            );
            let child = std::thread::spawn(|| (policy().unwrap(), current().unwrap()));
            assert_eq!(child.join().unwrap(), (libc::SCHED_OTHER, 0));
        })
        .join()
        .unwrap();
    }
}
