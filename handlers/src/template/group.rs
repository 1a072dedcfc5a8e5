//! Templates that share a reload: every template of one scope (a plugin, or the config file)
//! with the same `reload` command is in one [`Group`], and a run renders the whole group, then
//! reloads once.
//!
//! Why the group and not each template: a plugin's templates react to the same events, and
//! reloading memcached's clients four times because four lists changed is three reloads too
//! many. A run of any of them renders every template of the group that has not seen the
//! current cluster state yet; the runs of the others then find nothing to do. A template without
//! a reload command is a group of its own.
//!
//! Handlers join their group when they start ([`TemplateGroups::join`]) and leave it when their
//! runtime is dropped ([`Membership`]); a handler restarted under the same name replaces its
//! entry.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::render::{Compiled, Data, RenderError};
use super::write::{Candidate, Ownership, splice_block};
use super::{TemplateConfig, TemplateStatus};
use crate::contract::LocalNode;
use crate::lock;
use crate::members::Members;
use crate::output::OUTPUT_LIMIT;
use crate::runtime::RunResult;
use crate::shell::{self, Invocation};

/// What a render reads: equal inputs render equal files.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub members: Members,
    pub local: LocalNode,
}

impl PartialEq for Inputs {
    fn eq(&self, other: &Inputs) -> bool {
        (Arc::ptr_eq(&self.members, &other.members) || self.members == other.members)
            && self.local == other.local
    }
}

/// Every group of the running handlers, by scope and reload command.
#[derive(Default)]
pub struct TemplateGroups {
    groups: Mutex<HashMap<(String, String), Weak<Group>>>,
    next_id: AtomicU64,
}

impl TemplateGroups {
    /// Puts handler `handler`'s template into its group (replacing an entry of the same
    /// handler) and returns its membership, which leaves the group when dropped.
    pub fn join(&self, handler: &str, config: &TemplateConfig) -> Membership {
        let group = match &config.reload {
            None => Arc::new(Group::new(None)),
            Some(reload) => {
                let mut groups = lock(&self.groups);
                groups.retain(|_, g| g.strong_count() > 0);
                let key = (config.scope.clone(), reload.clone());
                match groups.get(&key).and_then(Weak::upgrade) {
                    Some(group) => group,
                    None => {
                        let group = Arc::new(Group::new(Some(reload.clone())));
                        groups.insert(key, Arc::downgrade(&group));
                        group
                    }
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(Mutex::new(EntryState {
            status: TemplateStatus {
                destination: config.destination.display().to_string(),
                ..TemplateStatus::default()
            },
            rendered: None,
            started: false,
        }));
        let entry = Entry {
            id,
            config: Arc::new(config.clone()),
            compiled: Compiled::new(&config.source).map(Arc::new),
            state: state.clone(),
            handler: handler.to_string(),
        };
        {
            let mut entries = lock(&group.entries);
            entries.retain(|e| e.handler != handler);
            entries.push(entry);
        }
        Membership { group, id, state }
    }
}

/// A handler's place in its group.
pub struct Membership {
    group: Arc<Group>,
    id: u64,
    state: Arc<Mutex<EntryState>>,
}

impl Membership {
    pub fn group(&self) -> &Group {
        &self.group
    }

    pub fn status(&self) -> TemplateStatus {
        lock(&self.state).status.clone()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        lock(&self.group.entries).retain(|e| e.id != self.id);
    }
}

/// Templates rendered together and reloaded once.
pub struct Group {
    reload: Option<String>,
    entries: Mutex<Vec<Entry>>,
    /// One render of the group at a time.
    cycle: tokio::sync::Mutex<()>,
    /// The last reload failed: try again on the next run.
    reload_pending: AtomicBool,
}

#[derive(Clone)]
struct Entry {
    id: u64,
    handler: String,
    config: Arc<TemplateConfig>,
    compiled: Result<Arc<Compiled>, RenderError>,
    state: Arc<Mutex<EntryState>>,
}

struct EntryState {
    status: TemplateStatus,
    /// What it last rendered successfully from.
    rendered: Option<Inputs>,
    /// It has rendered since its handler started (and reloaded then, if asked to).
    started: bool,
}

/// What one render of a group did, turned into the run's result.
#[derive(Default)]
pub struct Outcome {
    /// One line per template: what happened to its file.
    report: Vec<String>,
    errors: Vec<String>,
    /// Output of checks and reloads.
    output: Vec<u8>,
    timed_out: bool,
}

impl Outcome {
    pub fn into_result(self, started_at: SystemTime, duration: Duration) -> RunResult {
        let mut stdout = self.report.join("\n").into_bytes();
        let mut stderr = self.output;
        let truncated = stdout.len() > OUTPUT_LIMIT || stderr.len() > OUTPUT_LIMIT;
        for buf in [&mut stdout, &mut stderr] {
            if buf.len() > OUTPUT_LIMIT {
                buf.drain(..buf.len() - OUTPUT_LIMIT);
            }
        }
        RunResult {
            exit_code: Some(if self.errors.is_empty() { 0 } else { 1 }),
            signal: None,
            timed_out: self.timed_out,
            duration,
            started_at,
            stdout,
            stderr,
            truncated,
            error: (!self.errors.is_empty()).then(|| self.errors.join("; ")),
            started: true,
        }
    }
}

impl Group {
    fn new(reload: Option<String>) -> Group {
        Group {
            reload,
            entries: Mutex::new(Vec::new()),
            cycle: tokio::sync::Mutex::new(()),
            reload_pending: AtomicBool::new(false),
        }
    }

    /// Every template of the group has rendered `inputs`, and no reload is owed.
    pub fn up_to_date(&self, inputs: &Inputs) -> bool {
        !self.reload_pending.load(Ordering::Relaxed)
            && lock(&self.entries)
                .iter()
                .all(|e| lock(&e.state).rendered.as_ref() == Some(inputs))
    }

    /// Renders every template of the group that has not rendered `inputs`, then reloads once
    /// if a file changed (or a template rendered for the first time with `reload_on_start`,
    /// or the last reload failed).
    pub async fn render(
        &self,
        inputs: Inputs,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Outcome {
        let _cycle = self.cycle.lock().await;
        let entries: Vec<Entry> = lock(&self.entries).clone();
        let mut outcome = Outcome::default();
        let mut rendered = Vec::new();
        let mut changed = Vec::new();
        let mut reload = self.reload_pending.load(Ordering::Relaxed);
        for entry in entries {
            if lock(&entry.state).rendered.as_ref() == Some(&inputs) {
                continue;
            }
            let destination = entry.config.destination.display().to_string();
            match render_one(&entry, &inputs, env, timeout, &mut outcome).await {
                Ok(wrote) => {
                    let first = !lock(&entry.state).started;
                    outcome.report.push(format!(
                        "{destination}: {}",
                        if wrote { "written" } else { "unchanged" }
                    ));
                    if wrote {
                        changed.push(destination);
                    }
                    reload |= wrote || (first && entry.config.reload_on_start);
                    rendered.push(entry);
                }
                Err(e) => {
                    outcome.report.push(format!("{destination}: kept ({e})"));
                    outcome.errors.push(e);
                }
            }
        }
        if rendered.is_empty() && outcome.errors.is_empty() && !reload {
            outcome.report.push("up to date".into());
            return outcome;
        }
        let reloaded = match (&self.reload, reload) {
            (Some(command), true) => {
                let ok = self
                    .run_reload(command, &changed, env, timeout, &mut outcome)
                    .await;
                self.record_reload(ok, &rendered);
                ok
            }
            _ => true,
        };
        if reloaded {
            for entry in &rendered {
                lock(&entry.state).started = true;
            }
        }
        outcome
    }

    async fn run_reload(
        &self,
        command: &str,
        changed: &[String],
        env: &BTreeMap<String, String>,
        timeout: Duration,
        outcome: &mut Outcome,
    ) -> bool {
        let mut vars: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.push(("RUMOR_CHANGED".into(), changed.join("\n")));
        let result = shell::run(Invocation {
            command: command.to_string(),
            env: vars,
            stdin: Vec::new(),
            timeout,
        })
        .await;
        append_output(&mut outcome.output, "reload", &result);
        outcome.timed_out |= result.timed_out;
        if result.success() {
            outcome.report.push(format!("reloaded: {command}"));
            self.reload_pending.store(false, Ordering::Relaxed);
            true
        } else {
            let e = format!(
                "reload `{command}` {result}{}",
                tail_suffix(&result.stderr_tail(512))
            );
            outcome.report.push(e.clone());
            outcome.errors.push(e);
            self.reload_pending.store(true, Ordering::Relaxed);
            false
        }
    }

    fn record_reload(&self, ok: bool, rendered: &[Entry]) {
        // Counted on every template of the group: each one's file is what was reloaded.
        for entry in lock(&self.entries).iter() {
            let mut state = lock(&entry.state);
            if ok {
                state.status.reloads += 1;
            } else {
                state.status.reload_failures += 1;
                if rendered.iter().any(|r| r.id == entry.id) {
                    state.status.last_error = Some("the reload command failed".into());
                }
            }
        }
    }
}

/// Renders one template, checks it and swaps it in. `Ok(true)`: the file changed.
async fn render_one(
    entry: &Entry,
    inputs: &Inputs,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    outcome: &mut Outcome,
) -> Result<bool, String> {
    let config = &entry.config;
    let fail = |kind: fn(&mut TemplateStatus), message: String| {
        let mut state = lock(&entry.state);
        kind(&mut state.status);
        state.status.last_error = Some(message.clone());
        message
    };
    let compiled = entry
        .compiled
        .as_ref()
        .map_err(|e| fail(|s| s.render_failures += 1, e.to_string()))?;
    let text = compiled
        .render(&Data {
            members: &inputs.members,
            local: &inputs.local,
            settings: &config.settings,
        })
        .map_err(|e| fail(|s| s.render_failures += 1, e.to_string()))?;
    let destination = &config.destination;
    let live = match std::fs::read(destination) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(fail(
                |s| s.render_failures += 1,
                format!("cannot read {}: {e}", destination.display()),
            ));
        }
    };
    let content = match &config.block {
        None => text.into_bytes(),
        Some(block) => {
            let existing = String::from_utf8_lossy(live.as_deref().unwrap_or_default());
            splice_block(&existing, block, &text)
                .map_err(|e| {
                    fail(
                        |s| s.render_failures += 1,
                        format!("{}: {e}", destination.display()),
                    )
                })?
                .into_bytes()
        }
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if live.as_deref() == Some(content.as_slice()) {
        let mut state = lock(&entry.state);
        state.status.renders += 1;
        state.status.last_render_unix_ms = Some(now_ms);
        state.status.last_error = None;
        state.rendered = Some(inputs.clone());
        return Ok(false);
    }
    let owner = config
        .owner
        .as_deref()
        .map(Ownership::parse)
        .transpose()
        .map_err(|e| fail(|s| s.render_failures += 1, e))?;
    let candidate = Candidate::write(destination, &content, config.perms, owner).map_err(|e| {
        fail(
            |s| s.render_failures += 1,
            format!(
                "cannot write a candidate for {}: {e}",
                destination.display()
            ),
        )
    })?;
    if let Some(check) = &config.check {
        let path = candidate.path().display().to_string();
        let mut vars: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.push(("RUMOR_CANDIDATE".into(), path.clone()));
        vars.push((
            "RUMOR_DESTINATION".into(),
            destination.display().to_string(),
        ));
        let command = with_candidate(check, &path);
        let result = shell::run(Invocation {
            command: command.clone(),
            env: vars,
            stdin: Vec::new(),
            timeout,
        })
        .await;
        append_output(&mut outcome.output, "check", &result);
        outcome.timed_out |= result.timed_out;
        if !result.success() {
            let output = if result.stderr.is_empty() {
                result.stdout_tail(1024)
            } else {
                result.stderr_tail(1024)
            };
            return Err(fail(
                |s| s.check_failures += 1,
                format!(
                    "check `{check}` refused the new {} ({result}); the live file was kept{}",
                    destination.display(),
                    tail_suffix(&output)
                ),
            ));
        }
    }
    candidate.commit(config.backup).map_err(|e| {
        fail(
            |s| s.render_failures += 1,
            format!("cannot replace {}: {e}", destination.display()),
        )
    })?;
    let mut state = lock(&entry.state);
    state.status.renders += 1;
    state.status.written += 1;
    state.status.last_render_unix_ms = Some(now_ms);
    state.status.last_error = None;
    state.rendered = Some(inputs.clone());
    Ok(true)
}

/// The check command with `{{candidate}}` (or `{{ candidate }}`) replaced by the candidate's
/// path, quoted for the shell.
pub fn with_candidate(command: &str, path: &str) -> String {
    let quoted = format!("'{}'", path.replace('\'', r"'\''"));
    command
        .replace("{{candidate}}", &quoted)
        .replace("{{ candidate }}", &quoted)
}

fn append_output(buf: &mut Vec<u8>, what: &str, result: &RunResult) {
    for stream in [&result.stdout, &result.stderr] {
        if !stream.is_empty() {
            buf.extend_from_slice(format!("[{what}] ").as_bytes());
            buf.extend_from_slice(stream);
            if !stream.ends_with(b"\n") {
                buf.push(b'\n');
            }
        }
    }
}

fn tail_suffix(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_is_quoted_into_the_check() {
        assert_eq!(
            with_candidate("haproxy -c -f {{candidate}}", "/etc/x/.h.cfg"),
            "haproxy -c -f '/etc/x/.h.cfg'"
        );
        assert_eq!(
            with_candidate("test -s {{ candidate }}", "/tmp/it's"),
            r"test -s '/tmp/it'\''s'"
        );
    }
}
