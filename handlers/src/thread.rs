//! The thread handlers run on: a single-threaded Tokio runtime of their own, at the priority
//! its creator gives it.
//!
//! Why: an agent may run its own work (the gossip) ahead of everything else on the host, and a
//! handler must not inherit that. Looking after a handler run — its environment, starting the
//! shell, its pipes, reaping it — costs more CPU than receiving the event does; left on the
//! gossip's thread, that work would run at the gossip's priority, between this member's receipt
//! of an event and the next member's, and ahead of the handlers themselves. Here it runs on a
//! thread of its own, and each shell is started straight from this thread, so it inherits the
//! thread's priority, without a thread per start.
//!
//! Which priority that is, is the creator's policy, not this crate's: [`HandlerThread::start`]
//! runs the creator's `prepare` on the new thread before anything else (the agent returns the
//! thread to the nice value it started with there).
//!
//! Give its [`HandlerThread::handle`] to [`Dispatcher::on`](crate::Dispatcher::on). Dropping
//! the `HandlerThread` stops the runtime: runs still in progress are killed with their process
//! groups, so wait for the dispatcher to be idle first.

use std::io;
use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A running handler thread; see the module docs.
pub struct HandlerThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HandlerThread {
    /// Starts the thread (named `rumor-handlers`) and its runtime. `prepare` runs first, on the
    /// new thread: it sets what every handler started from the thread inherits (its nice
    /// value, in the agent). Its error, or the runtime's, is the start's.
    pub fn start(
        prepare: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> io::Result<HandlerThread> {
        let (ready, started) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rumor-handlers".into())
            .spawn(move || {
                let runtime = prepare().and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                match runtime {
                    Ok(runtime) => {
                        let _ = ready.send(Ok(runtime.handle().clone()));
                        // The sender is dropped too when the HandlerThread is: stop either way.
                        let _ = runtime.block_on(stopped);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })?;
        let handle = started
            .recv()
            .map_err(|_| io::Error::other("the handler thread ended while starting"))??;
        Ok(HandlerThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The runtime the handlers run on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for HandlerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_thread_and_stop_with_it() {
        let thread = HandlerThread::start(|| Ok(())).unwrap();
        let (tx, rx) = mpsc::channel();
        thread.handle().spawn(async move {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
        });
        assert_eq!(rx.recv().unwrap().as_deref(), Some("rumor-handlers"));
        // A task that never ends does not keep the thread from stopping.
        thread.handle().spawn(std::future::pending::<()>());
        drop(thread);
    }

    #[test]
    fn prepare_runs_on_the_thread_first_and_its_error_fails_the_start() {
        let (tx, rx) = mpsc::channel();
        let thread = HandlerThread::start(move || {
            tx.send(std::thread::current().name().map(str::to_owned))
                .unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("rumor-handlers"));
        drop(thread);

        let refused = HandlerThread::start(|| Err(io::Error::other("not permitted")));
        assert_eq!(refused.err().unwrap().to_string(), "not permitted");
    }
}
