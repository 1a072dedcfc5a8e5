//! The thread handlers run on: a single-threaded Tokio runtime of their own, at the handlers'
//! priority.
//!
//! Why: the agent's own runtime does the gossip, which runs ahead of everything else on the
//! host ([`crate::priority`]). Looking after a handler run — its environment, starting the
//! shell, its pipes, reaping it — costs the agent more CPU than receiving the event does (on
//! this 2-core VM about 0.66 ms a run, against 0.43 ms for an event with no handler). Left on
//! the gossip's thread, that work ran at the gossip's priority: between this member's receipt
//! of an event and the next member's, and ahead of the handlers themselves. Here it runs at
//! the handlers' own nice value, and each shell is started straight from this thread, without
//! a thread per start. With this and a real-time gossip thread, the last of 50 agents sharing
//! 2 cores had a user event 2.2–2.9 ms after its sender, as with no handlers at all.
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
    /// Starts the thread (named `rumor-handlers`) and its runtime. When the agent's threads
    /// run boosted, the thread first returns to the handlers' nice value.
    pub fn start() -> io::Result<HandlerThread> {
        let (ready, started) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rumor-handlers".into())
            .spawn(move || {
                let runtime = crate::priority::handler_nice()
                    .map_or(Ok(()), crate::priority::set_current)
                    .and_then(|()| {
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
        let thread = HandlerThread::start().unwrap();
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
}
