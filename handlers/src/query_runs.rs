//! The runs of one query on this node, and this node's answer: the stdout of the first run to
//! exit 0 with something on it, whatever the handler's runtime. As in Serf, a run that exits 0
//! but prints nothing gives no answer (Serf sends a response only when its handler wrote
//! output), so an asker never collects empty strings from nodes that had nothing to say.
//!
//! [`Dispatcher::dispatch_query`](crate::Dispatcher::dispatch_query) queues the query for
//! every handler that selects it, each with a channel for its result; [`QueryRuns`] holds the
//! other ends. The agent waits on [`QueryRuns::answer`] within the query's deadline and sends
//! what it gives to the asker.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::runtime::RunResult;

/// Why a node has no answer to a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NoAnswer {
    #[error("no handler for this query")]
    NoHandler,
    #[error("every handler for this query failed")]
    Failed,
    #[error("the handler printed nothing (as in Serf, empty output is no answer)")]
    Empty,
}

/// The runs a query was queued for, one per handler that selected it.
#[derive(Debug)]
pub struct QueryRuns {
    runs: Vec<(String, oneshot::Receiver<RunResult>)>,
}

impl QueryRuns {
    /// The runs of one query, each with its handler's name.
    pub(crate) fn new(runs: Vec<(String, oneshot::Receiver<RunResult>)>) -> QueryRuns {
        QueryRuns { runs }
    }

    /// No handler will run the query: this node has no answer to give.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many handlers will run the query.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// The names of the handlers that will run the query.
    pub fn handlers(&self) -> impl Iterator<Item = &str> {
        self.runs.iter().map(|(name, _)| name.as_str())
    }

    /// This node's answer: the stdout of the first run (in the order they finish) that exits
    /// 0 and printed something. Otherwise why there is none. Waits at most as long as the
    /// handlers' timeouts; wrap it in `tokio::time::timeout` for the query's deadline.
    pub async fn answer(self) -> Result<Vec<u8>, NoAnswer> {
        if self.runs.is_empty() {
            return Err(NoAnswer::NoHandler);
        }
        let mut empty = false;
        self.first_success_where(|result| {
            empty |= result.stdout.is_empty();
            !result.stdout.is_empty()
        })
        .await
        .map(|(_, result)| result.stdout)
        .ok_or(if empty {
            NoAnswer::Empty
        } else {
            NoAnswer::Failed
        })
    }

    /// The first run (in the order they finish) that exits 0, with its handler's name.
    pub async fn first_success(self) -> Option<(String, RunResult)> {
        self.first_success_where(|_| true).await
    }

    /// The first run (in the order they finish) that exits 0 and that `wanted` accepts.
    async fn first_success_where(
        self,
        mut wanted: impl FnMut(&RunResult) -> bool,
    ) -> Option<(String, RunResult)> {
        let mut pending = self.runs;
        poll_fn(|cx| {
            let mut i = 0;
            while i < pending.len() {
                match Pin::new(&mut pending[i].1).poll(cx) {
                    Poll::Ready(Ok(result)) if result.success() && wanted(&result) => {
                        let (name, _) = pending.swap_remove(i);
                        return Poll::Ready(Some((name, result)));
                    }
                    // Failed, not wanted, or dropped (queue full, agent shutting down): no
                    // answer from it.
                    Poll::Ready(_) => {
                        pending.swap_remove(i);
                    }
                    Poll::Pending => i += 1,
                }
            }
            if pending.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The receivers themselves, for a caller that wants every result.
    pub fn into_receivers(self) -> Vec<(String, oneshot::Receiver<RunResult>)> {
        self.runs
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn result(exit_code: i32, stdout: &str) -> RunResult {
        RunResult {
            exit_code: Some(exit_code),
            signal: None,
            timed_out: false,
            duration: Duration::ZERO,
            started_at: SystemTime::UNIX_EPOCH,
            stdout: stdout.into(),
            stderr: Vec::new(),
            truncated: false,
            error: None,
            started: true,
        }
    }

    #[tokio::test]
    async fn the_answer_is_the_first_run_to_exit_zero_as_they_finish() {
        let (a, a_result) = oneshot::channel();
        let (b, b_result) = oneshot::channel();
        let (c, c_result) = oneshot::channel::<RunResult>();
        let runs = QueryRuns::new(vec![
            ("a".into(), a_result),
            ("b".into(), b_result),
            ("c".into(), c_result),
        ]);
        assert_eq!(runs.handlers().collect::<Vec<_>>(), ["a", "b", "c"]);
        // c was dropped (its queue was full), a failed, b answered later.
        drop(c);
        a.send(result(1, "no")).unwrap();
        let answer = tokio::spawn(runs.first_success());
        tokio::task::yield_now().await;
        b.send(result(0, "yes")).unwrap();
        let (name, answered) = answer.await.unwrap().unwrap();
        assert_eq!(
            (name.as_str(), answered.stdout.as_slice()),
            ("b", &b"yes"[..])
        );
    }

    #[tokio::test]
    async fn no_answer_when_no_run_exits_zero() {
        let (a, a_result) = oneshot::channel();
        a.send(result(2, "")).unwrap();
        assert_eq!(
            QueryRuns::new(vec![("a".into(), a_result)]).answer().await,
            Err(NoAnswer::Failed)
        );
        assert_eq!(
            QueryRuns::new(Vec::new()).answer().await,
            Err(NoAnswer::NoHandler)
        );
    }

    #[tokio::test]
    async fn empty_output_is_no_answer_and_another_handler_may_still_answer() {
        let (a, a_result) = oneshot::channel();
        a.send(result(0, "")).unwrap();
        assert_eq!(
            QueryRuns::new(vec![("a".into(), a_result)]).answer().await,
            Err(NoAnswer::Empty)
        );
        let (a, a_result) = oneshot::channel();
        let (b, b_result) = oneshot::channel();
        a.send(result(0, "")).unwrap();
        b.send(result(0, "up\n")).unwrap();
        let runs = QueryRuns::new(vec![("a".into(), a_result), ("b".into(), b_result)]);
        assert_eq!(runs.answer().await, Ok(b"up\n".to_vec()));
    }
}
