//! The daemon: resolves the configuration, starts the cluster and the control API, joins,
//! hands cluster events on, and handles signals (SIGINT/SIGTERM leave gracefully, SIGHUP
//! reloads). Data flows one way: cluster → event stream → (monitors, handlers).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use rumor_handlers::event::{Event, MemberEventKind, QueryEvent, Tags};
use rumor_handlers::{Dispatcher, HandledEvents, HandlerThread, LocalNode};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::advertise;
use crate::cluster::keyring::{Key, Keyring};
use crate::cluster::{self, ClusterConfig, ClusterHandle};
use crate::config::{AgentArgs, AgentConfig, DEFAULT_LOG_LEVEL};
use crate::control::{
    self, AgentInfo, ControlAuth, ControlContext, ControlEndpoint, ControlToken, ReloadRequest,
};
use crate::handled::{self, HandledRecord};
use crate::logging::{self, LogHub};

/// Events buffered for each `rumor monitor` subscriber before it is told it lagged.
const MONITOR_BUFFER: usize = 1024;
/// How long a stopping agent waits for handler runs in progress.
const SHUTDOWN_HANDLER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How raising the agent's threads above its handlers went (see
/// [`rumor_handlers::priority`]); done before the runtime starts, logged once logging is up.
pub enum Boost {
    Off,
    /// The agent's threads run at nice `agent`, its handlers at nice `handlers`.
    Applied {
        agent: i32,
        handlers: i32,
    },
    /// Not permitted: everything runs at the original priority.
    Failed(std::io::Error),
}

/// How putting the gossip thread under real-time scheduling went (see
/// [`rumor_handlers::priority::realtime`]).
pub enum Realtime {
    Off,
    /// `SCHED_RR` at this priority.
    Applied(u8),
    /// Not permitted: the gossip thread is a normal task (boosted, if that worked).
    Failed(std::io::Error),
}

/// Runs the agent until it leaves (SIGINT, SIGTERM or `rumor leave`).
/// `config` is `args` resolved; `boost` and `realtime` are how raising the agent's priority
/// went.
pub async fn run(
    args: AgentArgs,
    config: AgentConfig,
    boost: Boost,
    realtime: Realtime,
) -> anyhow::Result<()> {
    let logs = logging::init(&config.log_level, config.log_json)?;
    match boost {
        Boost::Off => info!("priority boost off: handlers run at the agent's priority"),
        Boost::Applied { agent, handlers } => {
            info!(
                agent_nice = agent,
                handler_nice = handlers,
                "priority boost applied"
            )
        }
        // Common and harmless for an unprivileged agent: worth a line, not a warning.
        Boost::Failed(e) => info!(
            "priority boost not applied ({e}): handlers run at the agent's priority \
             (needs root or CAP_SYS_NICE; priority_boost = 0 turns this off)"
        ),
    }
    match realtime {
        Realtime::Off => info!("real-time scheduling off"),
        Realtime::Applied(priority) => info!(
            priority,
            "real-time scheduling applied: the gossip thread runs SCHED_RR, handlers as before"
        ),
        Realtime::Failed(e) => info!(
            "real-time scheduling not applied ({e}): the gossip thread is a normal task \
             (needs root or CAP_SYS_NICE, and a cgroup that allows real-time tasks; \
             realtime_priority = 0 turns this off)"
        ),
    }
    prepare_data_dir(&config.data_dir)?;
    let advertise = advertise::choose(config.bind, config.advertise)?;
    let keyring = load_keyring(&config.data_dir, config.encrypt.as_deref())?;
    // Handlers run on a thread of their own, at their own priority (see HandlerThread); they
    // are checked before anything binds or joins: a typo fails the start.
    let handler_thread = HandlerThread::start().context("cannot start the handler thread")?;
    let dispatcher = Dispatcher::on(
        handler_thread.handle().clone(),
        LocalNode {
            name: config.node.clone(),
            tags: config.tags.clone(),
        },
        config.handlers.clone(),
    )
    .context("invalid handler configuration")?;
    for h in &config.handlers {
        info!(handler = %h.name, filter = %h.filter, command = %h.command, "handler registered");
    }
    // The control endpoint and its token too: TCP control without a token fails the start.
    let endpoint: ControlEndpoint = config
        .control
        .parse()
        .with_context(|| format!("invalid --control {:?}", config.control))?;
    let token = config
        .control_token
        .as_ref()
        .map(ControlToken::load)
        .transpose()
        .context("invalid control token")?;
    let auth = ControlAuth::new(token);
    control::check_endpoint(&endpoint, &auth)?;

    let running = cluster::start(ClusterConfig {
        node: config.node.clone(),
        bind: config.bind,
        advertise,
        profile: config.profile,
        tags: config.tags.clone(),
        join: config.join.clone(),
        retry_join: config.retry_join.clone(),
        max_event_bytes: config.max_event_bytes,
        max_response_bytes: config.max_response_bytes,
        reconnect_timeout: config.reconnect_timeout,
        tombstone_timeout: config.tombstone_timeout,
        keyring_file: keyring.as_ref().map(|_| Keyring::file_in(&config.data_dir)),
        keyring,
        snapshot_file: Some(config.data_dir.join(cluster::snapshot::SNAPSHOT_FILE)),
        rejoin_after_leave: config.rejoin_after_leave,
        direct_push_limit: cluster::plumtree::DIRECT_LIMIT,
    })
    .await?;
    let handle = running.handle.clone();

    // After a restart the cluster delivers again what peers still hold; handlers skip what
    // they ran before (and a handler added since skips what happened before the restart).
    let restored_clock = handle.info().await?.event_clock;
    let default_mark = (restored_clock > 0).then(|| HandledEvents::before(restored_clock));
    dispatcher.restore_handled(handled::load(&config.data_dir), default_mark);
    let record =
        HandledRecord::open(&config.data_dir, dispatcher.handled()).with_context(|| {
            format!(
                "cannot write the handler record in {}; check that the data directory is writable",
                config.data_dir.display()
            )
        })?;
    // On the handler thread, which has just finished the run anyway: on the gossip thread,
    // every handler run woke it, ahead of everything on the host, in the middle of the burst
    // of handler runs an event starts across a cluster.
    let (stop_saver, saver_stop) = oneshot::channel();
    let saver =
        handler_thread
            .handle()
            .spawn(handled::keep_saved(record, dispatcher.clone(), saver_stop));

    if !config.join.is_empty() {
        let report = handle.join(&config.join).await.with_context(|| {
            format!(
                "could not join the cluster through {}; check the addresses and that an agent runs there, or use --retry-join to keep trying in the background",
                config.join.join(", ")
            )
        })?;
        info!(joined = report.joined, "joined the cluster");
        for e in &report.errors {
            warn!("join: {e}");
        }
    }

    let (events_tx, _) = broadcast::channel(MONITOR_BUFFER);
    tokio::spawn(forward_events(
        running.events,
        events_tx.clone(),
        handle.clone(),
        dispatcher.clone(),
        config.node.clone(),
    ));

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let context = ControlContext {
        cluster: handle.clone(),
        events: events_tx,
        logs: logs.clone(),
        reload: reload_tx,
        handlers: dispatcher.clone(),
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: std::time::Instant::now(),
            control: config.control.clone(),
            data_dir: config.data_dir.clone(),
        },
        auth,
    };
    let server = control::serve(&endpoint, context.clone()).await?;
    let metrics = match config.metrics {
        Some(addr) => Some(control::serve_metrics(addr, context).await?),
        None => None,
    };
    info!(control = %server.endpoint(), identity = %running.local, "agent running");

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut actor = running.task;
    let mut reloader = Reloader::new(args, &config, dispatcher);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { leave(&handle, "SIGTERM").await; break; }
            _ = sigint.recv() => { leave(&handle, "SIGINT").await; break; }
            _ = sighup.recv() => {
                match reloader.reload(&handle, &logs).await {
                    Ok(msg) => info!("SIGHUP: {msg}"),
                    Err(e) => error!("SIGHUP: reload failed, keeping the running configuration: {e}"),
                }
            }
            Some(reply) = reload_rx.recv() => {
                let result = reloader.reload(&handle, &logs).await;
                if let Err(e) = &result {
                    error!("reload failed, keeping the running configuration: {e}");
                }
                let _ = reply.send(result);
            }
            _ = &mut actor => { info!("left the cluster"); break; }
        }
    }
    server.shutdown().await;
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    // Let runs in progress finish, so the record of what ran is complete.
    if !reloader.dispatcher.wait_idle(SHUTDOWN_HANDLER_WAIT).await {
        warn!("handlers still busy at shutdown; their events may run again after a restart");
    }
    let _ = stop_saver.send(());
    match saver.await {
        Ok(record) => handled::save_last(record, &reloader.dispatcher),
        Err(e) => error!("the handler record writer failed: {e}"),
    }
    drop(handler_thread);
    Ok(())
}

async fn leave(handle: &ClusterHandle, why: &str) {
    info!("{why}: leaving the cluster gracefully");
    if let Err(e) = handle.leave().await {
        debug!("leave: {e}");
    }
}

/// The keyring: the file in the data directory when there is one (it holds the keys as
/// `rumor keys` last left them), else a new one from `--encrypt`, written to that file; else
/// no encryption.
fn load_keyring(data_dir: &Path, encrypt: Option<&str>) -> anyhow::Result<Option<Keyring>> {
    let file = Keyring::file_in(data_dir);
    if file.exists() {
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the keyring {} is readable by other users (mode {mode:o}): run `chmod 600 {}`",
                file.display(),
                file.display()
            );
        }
        let ring = Keyring::load(&file).map_err(anyhow::Error::msg)?;
        if let Some(key) = encrypt
            && !ring
                .keys()
                .any(|k| Some(k) == Key::parse(key).ok().as_ref())
        {
            warn!(
                keyring = %file.display(),
                "--encrypt is ignored: the keyring file exists and holds the keys (manage them with `rumor keys`)"
            );
        }
        info!(
            keys = ring.keys().count(),
            "gossip encryption on (keyring file)"
        );
        return Ok(Some(ring));
    }
    let Some(key) = encrypt else {
        return Ok(None);
    };
    let ring = Keyring::new(vec![Key::parse(key)?]);
    ring.save(&file)
        .with_context(|| format!("cannot write the keyring {}", file.display()))?;
    info!(keyring = %file.display(), "gossip encryption on");
    Ok(Some(ring))
}

/// Creates the data directory (0700: it holds the control socket and, later, keys).
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data directory {}; choose another with --data-dir",
            dir.display()
        )
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot set permissions on the data directory {}",
            dir.display()
        )
    })?;
    Ok(())
}

/// Hands every cluster event to the handlers and the monitors (and logs it). Query answers
/// go back to the cluster.
async fn forward_events(
    mut events: mpsc::UnboundedReceiver<Event>,
    monitors: broadcast::Sender<Event>,
    cluster: ClusterHandle,
    dispatcher: Dispatcher,
    local: String,
) {
    while let Some(event) = events.recv().await {
        match &event {
            Event::Member { kind, members } => {
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                info!(event = kind.as_str(), members = %names.join(","), "member event");
                // Handlers see the local node's current tags (SERF_TAG_*, SERF_SELF_ROLE).
                if *kind == MemberEventKind::Update
                    && let Some(me) = members.iter().find(|m| m.name == local)
                {
                    dispatcher.set_local(LocalNode {
                        name: local.clone(),
                        tags: me.tags.clone(),
                    });
                }
                dispatcher.dispatch(event.clone());
            }
            Event::User(u) => {
                info!(name = %u.name, ltime = u.ltime, origin = %u.origin, "user event received");
                dispatcher.dispatch(event.clone());
            }
            Event::Query(q) => {
                info!(name = %q.name, ltime = q.ltime, origin = %q.origin, "query received");
                answer_query(&dispatcher, &cluster, q.clone());
            }
        }
        // No monitor connected is fine.
        let _ = monitors.send(event);
    }
}

/// Runs the query's handlers; the stdout of the first that exits 0 is this node's answer. A
/// node without a matching handler says so at once, so the asker need not wait for it.
fn answer_query(dispatcher: &Dispatcher, cluster: &ClusterHandle, query: QueryEvent) {
    let runs = dispatcher.dispatch_query(query.clone());
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let answer = if runs.is_empty() {
            Err(format!("no handler for query {:?}", query.name))
        } else {
            runs.answer()
                .await
                .ok_or_else(|| "every handler for this query failed".to_string())
        };
        let _ = cluster.respond(query.origin, query.id, answer).await;
    });
}

/// Applies the reloadable part of the config file (tags, log level) on SIGHUP or
/// `rumor reload`. Flags and environment variables keep winning over the file.
struct Reloader {
    args: AgentArgs,
    dispatcher: Dispatcher,
    file: Option<std::path::PathBuf>,
    /// The tags the configuration gave last time, so keys removed from the file are deleted.
    configured_tags: Tags,
}

impl Reloader {
    fn new(args: AgentArgs, config: &AgentConfig, dispatcher: Dispatcher) -> Self {
        Reloader {
            args,
            dispatcher,
            file: config.config_file.clone(),
            configured_tags: config.tags.clone(),
        }
    }

    async fn reload(&mut self, handle: &ClusterHandle, logs: &LogHub) -> Result<String, String> {
        let Some(path) = &self.file else {
            return Err(
                "the agent was started without --config: there is no file to reload".into(),
            );
        };
        let fresh = self.args.reload().map_err(|e| e.to_string())?;
        // Handlers first: a bad handler set changes nothing (queued events are kept).
        self.dispatcher
            .reload(fresh.handlers.clone())
            .map_err(|e| e.to_string())?;
        let level = fresh.log_level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL);
        logs.set_level(level).map_err(|e| e.to_string())?;
        let removed: Vec<String> = self
            .configured_tags
            .keys()
            .filter(|k| !fresh.tags.contains_key(*k))
            .cloned()
            .collect();
        let tags = handle
            .update_tags(fresh.tags.clone(), removed)
            .await
            .map_err(|e| e.to_string())?;
        self.configured_tags = fresh.tags;
        Ok(format!(
            "reloaded {}: log level {level}, {} tags, {} handlers",
            path.display(),
            tags.len(),
            fresh.handlers.len()
        ))
    }
}
