//! How many connections a control API listener keeps, and what happens to the next one.
//!
//! # Why
//!
//! Nothing bounded them: 3,000 idle connections held 3,000 descriptors, and with the agent at
//! 1,024 open files, 1,100 connections to the token-less metrics port made `accept` fail for
//! `rumor` commands for seconds and a handler fail to start ("Too many open files").
//!
//! # How
//!
//! Each listener (the control API; the `--metrics` one) keeps at most `max_control_connections`
//! ([`DEFAULT_MAX_CONNECTIONS`]). A new connection is looked at before it is served:
//!
//! * when fewer than [`descriptors::RESERVE`] descriptors are free, it is closed at once
//!   (refused, `descriptors`): those are kept for handlers and the agent's own files;
//! * when the listener is full, the connection idle the longest — no request in progress (a
//!   `rumor monitor` stream is one until it ends), still sending its headers, or waiting
//!   between keep-alive requests — is closed to make room (evicted); if every one is busy, the
//!   new one is closed instead (refused, `full`).
//!
//! Idle connections also end on their own: a client gets `HEADER_TIMEOUT` (10 s) for each
//! request's headers and `BODY_TIMEOUT` for its body. What was refused and evicted is counted
//! per listener ([`ListenerCounts`], in `rumor info` and `/metrics`) and logged at most once a
//! second.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use super::context::Scope;
use super::reply::Body;
use crate::descriptors;

/// Connections a listener keeps at most, unless `max_control_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;

/// The limit each listener applies, and the counters of all of them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max: usize,
    api: ListenerStats,
    metrics: ListenerStats,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits::new(DEFAULT_MAX_CONNECTIONS)
    }
}

impl ConnectionLimits {
    /// At most `max` connections per listener (at least 1).
    pub fn new(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            inner: Arc::new(Shared {
                max: max.max(1),
                api: ListenerStats::default(),
                metrics: ListenerStats::default(),
            }),
        }
    }

    pub fn max_connections(&self) -> usize {
        self.inner.max
    }

    fn stats(&self, scope: Scope) -> &ListenerStats {
        match scope {
            Scope::Api => &self.inner.api,
            Scope::Metrics => &self.inner.metrics,
        }
    }

    /// The counts of the control API's listener and of the metrics listener.
    pub fn counts(&self) -> ControlConnections {
        ControlConnections {
            max_per_listener: self.inner.max,
            api: self.inner.api.counts(),
            metrics: self.inner.metrics.counts(),
        }
    }
}

#[derive(Debug, Default)]
struct ListenerStats {
    open: AtomicUsize,
    evicted: AtomicU64,
    refused_full: AtomicU64,
    refused_descriptors: AtomicU64,
}

impl ListenerStats {
    fn counts(&self) -> ListenerCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ListenerCounts {
            open: self.open.load(Ordering::Relaxed),
            evicted: load(&self.evicted),
            refused_full: load(&self.refused_full),
            refused_descriptors: load(&self.refused_descriptors),
        }
    }
}

/// The control API's connections, as `rumor info` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlConnections {
    /// `max_control_connections`.
    pub max_per_listener: usize,
    /// The control API's listener.
    pub api: ListenerCounts,
    /// The `--metrics` listener (all zero without one).
    pub metrics: ListenerCounts,
}

/// One listener's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerCounts {
    /// Open now.
    pub open: usize,
    /// Closed while idle to make room for a new one, since the start.
    pub evicted: u64,
    /// Closed at once: every connection was busy.
    pub refused_full: u64,
    /// Closed at once: too few descriptors were free.
    pub refused_descriptors: u64,
}

/// What one connection is doing, for choosing which to evict.
#[derive(Debug)]
pub(super) struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        })
    }

    /// A request starts; it is in progress until the guard (kept with its response body) is
    /// dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| *self.last.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A request in progress (see [`Activity::begin`]).
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    /// The response body, keeping the request in progress until it is sent (or dropped).
    pub fn keep_with(self, body: Body) -> Body {
        BodyExt::boxed(Sending {
            body,
            _in_flight: self,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A response body being sent; everything about it is the inner body's.
struct Sending {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Sending {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What to do with a connection just accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Serve it.
    Serve,
    /// Serve it; the connection idle the longest was closed for it.
    ServeEvicting,
    /// Close it: every connection is busy.
    RefuseFull,
    /// Close it: too few descriptors are free.
    RefuseDescriptors(usize),
}

/// One listener's connections, kept by its accept loop.
pub(super) struct ListenerConnections {
    limits: ConnectionLimits,
    scope: Scope,
    serving: Vec<Serving>,
}

struct Serving {
    activity: Weak<Activity>,
    task: AbortHandle,
}

impl ListenerConnections {
    pub fn new(limits: ConnectionLimits, scope: Scope) -> ListenerConnections {
        ListenerConnections {
            limits,
            scope,
            serving: Vec::new(),
        }
    }

    /// Decides about a connection just accepted, with `free` descriptors left (`None`:
    /// unknown), and counts the decision. On [`Admit::Serve`] or [`Admit::ServeEvicting`] the
    /// caller serves it and [`ListenerConnections::serving`]s it.
    pub fn admit(&mut self, free: Option<usize>) -> Admit {
        self.forget_finished();
        let decision = match free {
            Some(free) if free < descriptors::RESERVE => Admit::RefuseDescriptors(free),
            _ if self.serving.len() < self.limits.max_connections() => Admit::Serve,
            _ if self.evict_idlest() => Admit::ServeEvicting,
            _ => Admit::RefuseFull,
        };
        let stats = self.limits.stats(self.scope);
        let counter = match decision {
            Admit::Serve => None,
            Admit::ServeEvicting => Some(&stats.evicted),
            Admit::RefuseFull => Some(&stats.refused_full),
            Admit::RefuseDescriptors(_) => Some(&stats.refused_descriptors),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        decision
    }

    /// Lists a connection being served by `task`.
    pub fn serving(&mut self, activity: &Arc<Activity>, task: AbortHandle) {
        self.serving.push(Serving {
            activity: Arc::downgrade(activity),
            task,
        });
        self.publish();
    }

    fn forget_finished(&mut self) {
        self.serving.retain(|s| s.activity.strong_count() > 0);
        self.publish();
    }

    fn publish(&self) {
        let open = &self.limits.stats(self.scope).open;
        open.store(self.serving.len(), Ordering::Relaxed);
    }

    fn evict_idlest(&mut self) -> bool {
        let idlest = self
            .serving
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.activity.upgrade()?.idle_since()?)))
            .min_by_key(|(_, since)| *since)
            .map(|(i, _)| i);
        let Some(i) = idlest else { return false };
        self.serving.swap_remove(i).task.abort();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(
        listener: &mut ListenerConnections,
    ) -> (Arc<Activity>, tokio::task::JoinHandle<()>) {
        let activity = Activity::new();
        let task = tokio::spawn(std::future::pending());
        listener.serving(&activity, task.abort_handle());
        (activity, task)
    }

    #[tokio::test]
    async fn a_full_listener_closes_its_idlest_connection_never_a_busy_one() {
        let limits = ConnectionLimits::new(2);
        let mut listener = ListenerConnections::new(limits.clone(), Scope::Metrics);
        assert_eq!(listener.admit(Some(1000)), Admit::Serve);
        let (busy, busy_task) = connection(&mut listener);
        let _request = busy.begin();
        assert_eq!(listener.admit(Some(1000)), Admit::Serve);
        let (_idle, idle_task) = connection(&mut listener);

        assert_eq!(listener.admit(Some(1000)), Admit::ServeEvicting);
        assert!(idle_task.await.unwrap_err().is_cancelled());
        assert!(!busy_task.is_finished());
        let (newest, _newest_task) = connection(&mut listener);
        let _request2 = newest.begin();
        assert_eq!(listener.admit(Some(1000)), Admit::RefuseFull);

        let counts = limits.counts();
        assert_eq!(counts.metrics.open, 2);
        assert_eq!(
            (counts.metrics.evicted, counts.metrics.refused_full),
            (1, 1)
        );
        assert_eq!(counts.api, ListenerCounts::default());
    }

    #[tokio::test]
    async fn too_few_free_descriptors_refuse_and_finished_connections_leave() {
        let limits = ConnectionLimits::new(1);
        let mut listener = ListenerConnections::new(limits.clone(), Scope::Api);
        assert_eq!(
            listener.admit(Some(descriptors::RESERVE - 1)),
            Admit::RefuseDescriptors(descriptors::RESERVE - 1)
        );
        assert_eq!(listener.admit(None), Admit::Serve);
        let (done, _task) = connection(&mut listener);
        drop(done);
        assert_eq!(listener.admit(Some(descriptors::RESERVE)), Admit::Serve);
        assert_eq!(limits.counts().api.refused_descriptors, 1);
        assert_eq!(limits.counts().api.evicted, 0);
    }
}
