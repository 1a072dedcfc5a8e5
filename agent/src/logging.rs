//! Logging: tracing setup, runtime log-level changes, and log streaming to `rumor monitor`.
//!
//! [`init`] installs one global subscriber with two layers, each with its own filter:
//! - stderr, human text or JSON, behind a reloadable [`EnvFilter`] ([`LogHub::set_level`]);
//! - the monitor layer, which turns records into [`LogLine`]s for [`LogHub::subscribe`]rs.
//!   Its filter asks for exactly the most verbose level any live subscription wants, so with
//!   nobody subscribed it costs nothing, and a monitor at `debug` sees debug lines even while
//!   stderr is at `info`.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

/// How many log lines a slow monitor may fall behind before it is told it missed some.
const MONITOR_BUFFER: usize = 1024;

/// One log record as `rumor monitor` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// UTC time, RFC 3339 with microseconds, e.g. `2025-01-31T12:00:00.000123Z`.
    pub ts: String,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    /// The module that logged it, e.g. `rumor::cluster`.
    pub target: String,
    /// The message followed by the record's other fields as ` key=value`.
    pub message: String,
}

/// The running agent's logging: changes the stderr level and hands out log subscriptions.
/// Cheap to clone.
#[derive(Clone)]
pub struct LogHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    lines: broadcast::Sender<(Level, Arc<LogLine>)>,
    /// Live subscriptions per level (index `verbosity(level) - 1`).
    subscribers: Mutex<[usize; 5]>,
    /// The most verbose level any live subscription wants: 0 for none, 1 (error) ..= 5 (trace).
    wanted: AtomicU8,
    /// The stderr filter, once [`init`] has installed it.
    stderr_filter: OnceLock<reload::Handle<EnvFilter, Registry>>,
}

/// A stream of log lines at `level` or less verbose. Dropping it unsubscribes.
pub struct LogSubscription {
    pub level: Level,
    rx: broadcast::Receiver<(Level, Arc<LogLine>)>,
    hub: Arc<HubInner>,
}

/// What [`LogSubscription::recv`] yields.
#[derive(Debug)]
pub enum LogRecv {
    Line(Arc<LogLine>),
    /// The subscriber fell behind and this many lines were dropped for it.
    Lagged(u64),
    /// The hub is gone.
    Closed,
}

/// Installs the global tracing subscriber, logging to stderr at `level` (a level name or
/// `EnvFilter` directives like `info,rumor::cluster=debug`), as JSON when `json` is set.
pub fn init(level: &str, json: bool) -> anyhow::Result<LogHub> {
    let hub = LogHub::new();
    let (filter, handle) = reload::Layer::new(parse_filter(level).map_err(anyhow::Error::msg)?);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let monitor = MonitorLayer {
        hub: hub.inner.clone(),
    }
    .with_filter(MonitorFilter {
        hub: hub.inner.clone(),
    });
    tracing_subscriber::registry()
        .with(stderr)
        .with(monitor)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    let _ = hub.inner.stderr_filter.set(handle);
    Ok(hub)
}

impl Default for LogHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LogHub {
    /// A hub not attached to any subscriber (until [`init`] attaches one): subscriptions work
    /// but receive nothing. Useful in tests.
    pub fn new() -> Self {
        let (lines, _) = broadcast::channel(MONITOR_BUFFER);
        LogHub {
            inner: Arc::new(HubInner {
                lines,
                subscribers: Mutex::new([0; 5]),
                wanted: AtomicU8::new(0),
                stderr_filter: OnceLock::new(),
            }),
        }
    }

    /// Changes the stderr log level at runtime (same syntax as [`init`]).
    pub fn set_level(&self, level: &str) -> anyhow::Result<()> {
        let filter = parse_filter(level).map_err(anyhow::Error::msg)?;
        let handle = self.inner.stderr_filter.get().ok_or_else(|| {
            anyhow::anyhow!("cannot change the log level: logging is not initialised")
        })?;
        handle
            .reload(filter)
            .map_err(|e| anyhow::anyhow!("cannot change the log level: {e}"))
    }

    /// Starts receiving log lines at `level` and less verbose ones.
    pub fn subscribe(&self, level: Level) -> LogSubscription {
        let rx = self.inner.lines.subscribe();
        self.inner.count(level, true);
        LogSubscription {
            level,
            rx,
            hub: self.inner.clone(),
        }
    }
}

impl HubInner {
    /// Adds or removes one subscription at `level`, and refreshes tracing's callsite cache
    /// when the most verbose wanted level changes.
    fn count(&self, level: Level, add: bool) {
        let mut counts = self.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut counts[usize::from(verbosity(level)) - 1];
        if add {
            *slot += 1;
        } else {
            *slot = slot.saturating_sub(1);
        }
        let wanted = counts
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |i| i as u8 + 1);
        let before = self.wanted.swap(wanted, Ordering::Relaxed);
        drop(counts);
        if before != wanted {
            tracing::callsite::rebuild_interest_cache();
        }
    }

    fn wants(&self, level: &Level) -> bool {
        verbosity(*level) <= self.wanted.load(Ordering::Relaxed)
    }
}

impl LogSubscription {
    /// The next line at this subscription's level, or a note that lines were dropped.
    pub async fn recv(&mut self) -> LogRecv {
        loop {
            match self.rx.recv().await {
                Ok((level, line)) if verbosity(level) <= verbosity(self.level) => {
                    return LogRecv::Line(line);
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return LogRecv::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => return LogRecv::Closed,
            }
        }
    }
}

impl Drop for LogSubscription {
    fn drop(&mut self) {
        self.hub.count(self.level, false);
    }
}

/// Parses a log level name (`trace`, `debug`, `info`, `warn`, `error`), case-insensitively.
pub fn parse_level(s: &str) -> Result<Level, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(Level::ERROR),
        "warn" | "warning" => Ok(Level::WARN),
        "info" => Ok(Level::INFO),
        "debug" => Ok(Level::DEBUG),
        "trace" => Ok(Level::TRACE),
        _ => Err(format!(
            "invalid log level {s:?}: expected trace, debug, info, warn or error"
        )),
    }
}

/// Parses the stderr filter: a level name, `off`, or `EnvFilter` directives whose levels are
/// all level names (`info,rumor::cluster=debug`). A bare word that is not a level is refused
/// (EnvFilter would silently read it as a target name).
fn parse_filter(s: &str) -> Result<EnvFilter, String> {
    let bad = || {
        format!(
            "invalid log level {s:?}: expected trace, debug, info, warn, error or off, \
             or directives like \"info,rumor::cluster=debug\""
        )
    };
    let is_level = |l: &str| l.eq_ignore_ascii_case("off") || parse_level(l).is_ok();
    if s.trim().is_empty() {
        return Err(bad());
    }
    for directive in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let ok = match directive.rsplit_once('=') {
            Some((_, level)) if !directive.ends_with(']') => is_level(level),
            _ if directive.contains('[') => true,
            _ => is_level(directive),
        };
        if !ok {
            return Err(bad());
        }
    }
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::OFF.into())
        .parse(s)
        .map_err(|e| format!("{}: {e}", bad()))?;
    // bollard logs every Docker API request and response body at debug: a deploy's polling
    // would bury the agent's own lines. Asked for by name, it gets what is asked.
    Ok(if s.contains("bollard") {
        filter
    } else {
        filter.add_directive("bollard=info".parse().expect("a valid directive"))
    })
}

/// 1 for error up to 5 for trace.
fn verbosity(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Lets through exactly the events some monitor subscription wants; never spans.
struct MonitorFilter {
    hub: Arc<HubInner>,
}

impl<S: Subscriber> Filter<S> for MonitorFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.is_event() && self.hub.wants(meta.level())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_event() && self.hub.wants(meta.level()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.hub.wanted.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }
}

/// Formats events into [`LogLine`]s and broadcasts them to the subscriptions.
struct MonitorLayer {
    hub: Arc<HubInner>,
}

impl<S: Subscriber> Layer<S> for MonitorLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = FieldText::default();
        event.record(&mut fields);
        let line = LogLine {
            ts: rfc3339_utc(unix_nanos(SystemTime::now()), 6),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: fields.finish(),
        };
        let _ = self.hub.lines.send((*meta.level(), Arc::new(line)));
    }
}

/// Collects an event's message and its other fields as ` key=value`.
#[derive(Default)]
struct FieldText {
    message: String,
    rest: String,
}

impl FieldText {
    fn finish(mut self) -> String {
        if self.message.is_empty() {
            self.rest.trim_start().to_string()
        } else {
            self.message.push_str(&self.rest);
            self.message
        }
    }
}

impl Visit for FieldText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

/// Nanoseconds since the Unix epoch (0 for times before it).
pub fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Formats a Unix time in nanoseconds as RFC 3339 UTC with `digits` (0..=9) fractional digits,
/// e.g. `2025-01-31T12:00:00.123Z`.
pub fn rfc3339_utc(unix_ns: u128, digits: usize) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let nanos = (unix_ns % 1_000_000_000) as u32;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let digits = digits.min(9);
    if digits > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(&frac[..digits]);
    }
    out.push('Z');
    out
}

/// Howard Hinnant's days-since-epoch to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_utc(0, 0), "1970-01-01T00:00:00Z");
        // 2000-02-29T12:34:56.789Z, a leap day.
        assert_eq!(
            rfc3339_utc(951_827_696_789_000_000, 3),
            "2000-02-29T12:34:56.789Z"
        );
        assert_eq!(
            rfc3339_utc(1_735_689_599_000_000_001, 9),
            "2024-12-31T23:59:59.000000001Z"
        );
    }

    #[test]
    fn filters_parse_or_say_why_not() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,rumor::cluster=trace",
            "rumor=debug",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "verbose", "info,rumor=loud", "3"] {
            let err = parse_filter(bad).unwrap_err();
            assert!(err.contains("invalid log level"), "{bad}: {err}");
        }
        assert!(parse_level("Info").is_ok());
        assert!(parse_level("nope").unwrap_err().contains("expected trace"));
    }

    #[test]
    fn subscriptions_track_the_most_verbose_wanted_level() {
        let hub = LogHub::new();
        assert!(!hub.inner.wants(&Level::ERROR));
        let info = hub.subscribe(Level::INFO);
        assert!(hub.inner.wants(&Level::INFO) && !hub.inner.wants(&Level::DEBUG));
        let debug = hub.subscribe(Level::DEBUG);
        assert!(hub.inner.wants(&Level::DEBUG));
        drop(debug);
        assert!(!hub.inner.wants(&Level::DEBUG));
        drop(info);
        assert!(!hub.inner.wants(&Level::ERROR));
    }

    /// The only test that installs the global subscriber (it can be done once per process).
    #[tokio::test]
    async fn init_serves_monitors_below_the_stderr_level_and_reloads() {
        let hub = init("warn", false).unwrap();
        let mut sub = hub.subscribe(Level::DEBUG);
        tracing::debug!(target: "rumor::probe", "below stderr's level");
        let LogRecv::Line(line) = sub.recv().await else {
            panic!("expected a line")
        };
        assert_eq!(
            (line.level.as_str(), line.message.as_str()),
            ("DEBUG", "below stderr's level")
        );
        hub.set_level("error").unwrap();
        let err = hub.set_level("loud").unwrap_err();
        assert!(
            err.to_string().starts_with("invalid log level \"loud\""),
            "{err}"
        );
        assert!(init("info", false).is_err(), "a second init is refused");
    }

    #[tokio::test]
    async fn monitor_layer_delivers_lines_at_the_subscribed_level() {
        let hub = LogHub::new();
        let subscriber = tracing_subscriber::registry().with(
            MonitorLayer {
                hub: hub.inner.clone(),
            }
            .with_filter(MonitorFilter {
                hub: hub.inner.clone(),
            }),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut sub = hub.subscribe(Level::INFO);
        tracing::debug!("too verbose");
        tracing::info!(peer = "b", n = 3, "joined");
        let LogRecv::Line(line) = sub.recv().await else {
            panic!("expected a line")
        };
        assert_eq!(line.level, "INFO");
        assert_eq!(line.message, "joined peer=\"b\" n=3");
        assert!(line.target.starts_with("rumor"));
        assert!(line.ts.ends_with('Z'));
    }
}
