//! The daemon: resolves the configuration, starts the cluster and the control API, joins,
//! hands cluster events on, and handles signals (SIGINT/SIGTERM leave gracefully, SIGHUP
//! reloads). Data flows one way: cluster → event stream → (monitors, handlers).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use rumor_handlers::event::{Event, MemberEventKind, QueryEvent};
use rumor_handlers::{Dispatcher, HandledEvents, HandlerThread, LocalNode, NoAnswer};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::advertise;
use crate::cluster::keyring::{Key, Keyring};
use crate::cluster::{self, ClusterConfig, ClusterHandle};
use crate::config::{AgentArgs, AgentConfig};
use crate::control::{
    self, AgentInfo, ConnectionLimits, ControlAuth, ControlContext, ControlEndpoint, ControlToken,
    ReloadRequest,
};
use crate::descriptors;
use crate::handled::{self, HandledRecord};
use crate::health::{self, CheckBoard, HealthChecks};
use crate::logging;
use crate::member_view;
use crate::plugin::{PluginDir, Plugins};
use crate::reload::Reloader;
use crate::systemd;
use crate::tags_file;
use crate::watch::Watcher;

/// Events buffered for each `rumor monitor` subscriber before it is told it lagged.
const MONITOR_BUFFER: usize = 1024;
/// How long a stopping agent waits for handler runs in progress.
const SHUTDOWN_HANDLER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a stopping agent waits for the cluster's last events to be handed to the handlers.
const SHUTDOWN_EVENTS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How raising the agent's threads above its handlers went (see
/// [`crate::priority`]); done before the runtime starts, logged once logging is up.
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
/// [`crate::priority::realtime`]).
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
    mut config: AgentConfig,
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
    // Connections and handler runs share the descriptors: take all the host allows (see
    // crate::descriptors; the listeners keep a reserve free for handlers).
    match descriptors::raise_limit() {
        Ok(raised) => info!(
            open_files = raised.after,
            raised_from = raised.before,
            "open file limit"
        ),
        Err(e) => warn!("cannot raise the open file limit: {e}"),
    }
    prepare_data_dir(&config.data_dir)?;
    if let Some(path) = config.tags_file.as_deref().filter(|p| p.exists()) {
        config.tags = tags_file::load(path).map_err(anyhow::Error::msg)?;
        // The checks' tags of the last run are the checks' to publish again, not the
        // configuration's (a reload would otherwise treat them as configured tags).
        config
            .tags
            .retain(|k, _| !k.starts_with(crate::cluster::HEALTH_TAG_PREFIX));
        info!(tags_file = %path.display(), tags = config.tags.len(), "tags read from the tags file");
    }
    let advertise = advertise::choose(config.bind, config.advertise)?;
    let keyring_file = config
        .keyring_file
        .clone()
        .unwrap_or_else(|| Keyring::file_in(&config.data_dir));
    let keyring = load_keyring(&keyring_file, config.encrypt.as_deref())?;
    // Handlers run on a thread of their own, at their own priority (see HandlerThread and
    // crate::priority); they are checked before anything binds or joins: a typo fails the start.
    let handler_thread = HandlerThread::start(crate::priority::enter_handler_priority)
        .context("cannot start the handler thread")?;
    // Installed plugins add their handlers; one that does not load is reported, not fatal.
    let plugins = std::sync::Arc::new(Plugins::new(
        PluginDir::in_data_dir(&config.data_dir),
        config.plugin_trusted_keys.clone(),
    ));
    let (plugin_handlers, plugin_errors) = plugins.rescan();
    for e in &plugin_errors {
        error!("{e}; its handlers do not run until it loads (rumor plugin info shows it)");
    }
    let mut handlers = config.handlers.clone();
    handlers.extend(plugin_handlers);
    let mut checks = config.checks.clone();
    checks.extend(plugins.checks());
    crate::health::config::check_unique(&checks)
        .map_err(anyhow::Error::msg)
        .context("invalid health checks")?;
    let dispatcher = Dispatcher::on(
        handler_thread.handle().clone(),
        LocalNode {
            name: config.node.clone(),
            tags: config.tags.clone(),
        },
        handlers.clone(),
    )
    .context("invalid handler configuration")?;
    for h in &handlers {
        info!(handler = %h.name, filter = %h.filter, command = %h.runtime, "handler registered");
    }
    let reload_status = crate::reload::SharedReloadStatus::default();
    if !plugin_errors.is_empty() {
        let mut status = reload_status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.failures += 1;
        status.errors = plugin_errors;
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
        // Each check's tag says `critical` until its first result: a node takes no traffic
        // before its checks have run.
        tags: health::initial_tags(config.tags.clone(), &checks),
        join: config.join.clone(),
        retry_join: config.retry_join.clone(),
        max_event_bytes: config.max_event_bytes,
        max_response_bytes: config.max_response_bytes,
        reconnect_timeout: config.reconnect_timeout,
        tombstone_timeout: config.tombstone_timeout,
        // Always given: a reload may turn encryption on (docs/security.md).
        keyring_file: Some(keyring_file.clone()),
        keyring: keyring.map(|k| {
            k.staged(
                config.encrypt_verify_incoming,
                config.encrypt_verify_outgoing,
            )
        }),
        snapshot_file: Some(config.data_dir.join(cluster::snapshot::SNAPSHOT_FILE)),
        rejoin_after_leave: config.rejoin_after_leave,
        direct_push_limit: config.direct_push_limit,
        event_retention: config.event_retention,
    })
    .await?;
    let handle = running.handle.clone();
    // Runtimes that change this node (docker deploys set its tags) wait for this.
    dispatcher.set_node_control(std::sync::Arc::new(
        crate::node_control::ClusterNodeControl {
            cluster: handle.clone(),
            state_dir: config.data_dir.join("runtimes"),
        },
    ));

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

    // Templates render the member list: handed to the handlers on every change.
    tokio::spawn(member_view::keep_published(
        handle.watch_members(),
        dispatcher.clone(),
    ));
    let (events_tx, _) = broadcast::channel(MONITOR_BUFFER);
    let forwarder = tokio::spawn(forward_events(
        running.events,
        events_tx.clone(),
        handle.clone(),
        dispatcher.clone(),
        config.node.clone(),
        config.tags_file.clone(),
    ));

    // DNS answers from the member list the cluster publishes, never from the cluster's task.
    let dns = match &config.dns {
        Some(dns) => {
            let server = crate::dns::start(dns, &config.node, handle.watch_members()).await?;
            info!(dns = %server.addr(), domain = %dns.domain, "answering DNS");
            Some(server)
        }
        None => None,
    };
    // Checks run beside the handlers, at their priority; they set tags and send events.
    let check_board = CheckBoard::default();
    let mut health = HealthChecks::new(
        handler_thread.handle().clone(),
        handle.clone(),
        config.node.clone(),
        config.max_event_bytes,
        check_board.clone(),
    );
    health
        .apply(checks)
        .await
        .map_err(anyhow::Error::msg)
        .context("cannot start the health checks")?;

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let context = ControlContext {
        cluster: handle.clone(),
        events: events_tx,
        logs: logs.clone(),
        reload: reload_tx,
        handlers: dispatcher.clone(),
        plugins: plugins.clone(),
        reloads: reload_status.clone(),
        checks: check_board,
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            started: std::time::Instant::now(),
            control: config.control.clone(),
            data_dir: config.data_dir.clone(),
        },
        auth,
        limits: ConnectionLimits::new(config.max_control_connections),
        dns: dns.as_ref().map(|d| d.stats.clone()),
    };
    let server = control::serve(&endpoint, context.clone()).await?;
    let metrics = match config.metrics {
        Some(addr) => Some(control::serve_metrics(addr, context).await?),
        None => None,
    };
    info!(control = %server.endpoint(), identity = %running.local, "agent running");
    // The control socket serves and the join is done (or retrying in the background): what
    // `Type=notify` waits for before units ordered after rumor start.
    let status = format!("STATUS=serving the control API on {}", server.endpoint());
    if let Err(e) = systemd::notify(&format!("READY=1\n{status}")) {
        warn!("cannot tell systemd the agent is ready: {e}");
    }
    if let Some(interval) = systemd::watchdog_interval() {
        info!(every = ?interval, "feeding the systemd watchdog from the gossip loop");
        tokio::spawn(systemd::feed_watchdog(handle.clone(), interval));
    }

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut actor = running.task;
    let mut reloader = Reloader::new(
        args,
        &config,
        dispatcher,
        plugins.clone(),
        reload_status,
        health,
    );
    // Hot reload: edits to the config file, its templates and the plugin directory apply
    // within about a second.
    let (mut watcher, mut changes) =
        match Watcher::start(plugins.dir().path(), reloader.watched_files()) {
            Ok((watcher, changes)) => (Some(watcher), changes),
            Err(e) => {
                warn!("hot reload off ({e}): apply changes with `rumor reload` or SIGHUP");
                (None, mpsc::channel(1).1)
            }
        };
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
            Some(()) = changes.recv() => {
                match reloader.reload(&handle, &logs).await {
                    Ok(msg) => info!("change on disk applied: {msg}"),
                    Err(e) => error!("change on disk: {e}"),
                }
                if let Some(watcher) = watcher.as_mut() {
                    watcher.set_files(reloader.watched_files());
                }
            }
            Some(reply) = reload_rx.recv() => {
                let result = reloader.reload(&handle, &logs).await;
                if let Err(e) = &result {
                    error!("reload failed, keeping the running configuration: {e}");
                }
                let _ = reply.send(result);
            }
            _ = &mut actor => {
                info!("left the cluster");
                let _ = systemd::notify("STOPPING=1");
                break;
            }
        }
    }
    server.shutdown().await;
    if let Some(metrics) = metrics {
        metrics.shutdown().await;
    }
    drop(dns);
    // The cluster's last events (the node's own member-leave, as in Serf) reach the handlers
    // (the forwarder ends when the stopped cluster closes its stream), and what coalescing
    // holds runs now rather than at the end of its window. Then let runs in progress finish,
    // so the record of what ran is complete.
    if tokio::time::timeout(SHUTDOWN_EVENTS_WAIT, forwarder)
        .await
        .is_err()
    {
        warn!("the cluster did not stop in time; its last events may not reach the handlers");
    }
    reloader.dispatcher.flush_held();
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
    let _ = systemd::notify("STOPPING=1");
    if let Err(e) = handle.leave().await {
        debug!("leave: {e}");
    }
}

/// The keyring: the keyring file when there is one (it holds the keys as `rumor keys` last
/// left them), else a new one from `--encrypt`, written to that file; else no encryption.
fn load_keyring(file: &Path, encrypt: Option<&str>) -> anyhow::Result<Option<Keyring>> {
    if file.exists() {
        let mode = std::fs::metadata(file)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "the keyring {} is readable by other users (mode {mode:o}): run `chmod 600 {}`",
                file.display(),
                file.display()
            );
        }
        let ring = Keyring::load(file).map_err(anyhow::Error::msg)?;
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
    ring.save(file)
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
    tags_file: Option<std::path::PathBuf>,
) {
    let mut member_list = cluster.watch_members();
    while let Some(event) = events.recv().await {
        match &event {
            Event::Member { kind, members } => {
                // The list this event belongs to, before a template runs for it.
                member_view::publish_if_changed(&mut member_list, &dispatcher);
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
                    if let Some(path) = &tags_file
                        && let Err(e) = tags_file::save(path, &me.tags)
                    {
                        error!(tags_file = %path.display(), "cannot write the tags file: {e}; the new tags are lost at the next restart");
                    }
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

/// Runs the query's handlers; the stdout of the first that exits 0 with output is this node's
/// answer (empty output is no answer, as in Serf). A node without a matching handler says so
/// at once, so the asker need not wait for it.
fn answer_query(dispatcher: &Dispatcher, cluster: &ClusterHandle, query: QueryEvent) {
    let runs = dispatcher.dispatch_query(query.clone());
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let answer = runs.answer().await.map_err(|why| match why {
            NoAnswer::NoHandler => format!("no handler for query {:?}", query.name),
            other => other.to_string(),
        });
        let _ = cluster.respond(query.origin, query.id, answer).await;
    });
}
