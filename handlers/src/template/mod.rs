//! The template runtime: renders a template with the cluster's state, checks the result,
//! swaps it into place atomically, and reloads what reads it, only when it changed.
//!
//! A `[[handler]]` with `template = "FILE"` and `destination = "FILE"` (or a plugin's handler)
//! is one [`TemplateConfig`]. What one run does, in order:
//!
//! 1. **Up to date?** A run that finds its output already rendered from the current member list
//!    and local node returns at once: the twenty events of a burst of twenty joins are one
//!    render, not twenty.
//! 2. **Quiescence** (`wait`, [`quiescence`]): wait until the member list has been quiet for
//!    `min`, at most `max`.
//! 3. **Render** ([`render`]) with strict undefined: an error keeps the live file.
//! 4. **Compare** with the live file (or its marked block, [`write::splice_block`]): equal
//!    means nothing to write and nothing to reload.
//! 5. **Check** (`check`): the candidate, written next to the destination with its mode and
//!    owner, is checked by a command that finds it in `$RUMOR_CANDIDATE` and as `{{candidate}}`
//!    in its text. A failing check deletes the candidate, keeps the live file, logs the check's
//!    output and counts the failure.
//! 6. **Swap** ([`write::Candidate::commit`]): rename over the destination, after an optional
//!    `backup` (`DESTINATION.bak`).
//! 7. **Reload** (`reload`), once, if anything changed, and on the first render after the
//!    handler starts unless `reload_on_start = false`. Templates of one plugin (or of the config
//!    file) with the same reload command form a group ([`group`]): a run renders every template
//!    of its group, so templates that change together are reloaded together, once. A reload
//!    that failed is tried again on the next run even if nothing changed.
//!
//! A template handler also runs once when it starts (the file is right from the start, and a
//! template edited on disk is rendered as soon as the reload picks it up), after the agent has
//! published the member list.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::contract::LocalNode;
use crate::members::Members;
use crate::runtime::{Run, RunFuture, RunResult, Runtime, RuntimeContext, RuntimeDetails, Start};

pub mod group;
pub mod quiescence;
pub mod render;
pub mod write;

pub use group::TemplateGroups;
pub use quiescence::Wait;
pub use render::{Compiled, Data, RenderError, TemplateSource};

/// A plugin setting's value, as templates see it (`{{ settings.port }}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Boolean(bool),
    Integer(i64),
    Text(String),
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Boolean(b) => write!(f, "{b}"),
            Setting::Integer(i) => write!(f, "{i}"),
            Setting::Text(s) => f.write_str(s),
        }
    }
}

/// A template handler's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// The template, read when the configuration was loaded.
    pub source: TemplateSource,
    /// The file it writes.
    pub destination: PathBuf,
    /// Only the marked block `# BEGIN name` … `# END name` of the destination is rendered;
    /// the rest of the file is kept byte for byte.
    pub block: Option<String>,
    /// Run on the candidate before it replaces the destination; `{{candidate}}` in it and
    /// `$RUMOR_CANDIDATE` name the candidate.
    pub check: Option<String>,
    /// Run after the destination changed.
    pub reload: Option<String>,
    /// Also reload on the first render after the handler starts, changed or not.
    pub reload_on_start: bool,
    pub wait: Option<Wait>,
    /// The destination's mode [default: the existing file's, else 0644].
    pub perms: Option<u32>,
    /// The destination's owner, `user[:group]` (names or ids) [default: the existing file's].
    pub owner: Option<String>,
    /// Keep the previous file as `DESTINATION.bak`.
    pub backup: bool,
    /// The plugin's settings (`{{ settings.x }}`); empty for the config file's templates.
    pub settings: BTreeMap<String, Setting>,
    /// Who the template belongs to (a plugin's name, or `config`): templates of one scope with
    /// the same reload command are reloaded together.
    pub scope: String,
}

impl TemplateConfig {
    /// A template writing `destination`, with no check, reload, wait or settings.
    pub fn new(source: TemplateSource, destination: impl Into<PathBuf>) -> TemplateConfig {
        TemplateConfig {
            source,
            destination: destination.into(),
            block: None,
            check: None,
            reload: None,
            reload_on_start: true,
            wait: None,
            perms: None,
            owner: None,
            backup: false,
            settings: BTreeMap::new(),
            scope: "config".into(),
        }
    }

    /// Checks what can be checked before a run: the template parses, the destination and
    /// block name are usable, the owner is well-formed.
    pub fn validate(&self) -> Result<(), String> {
        Compiled::new(&self.source).map_err(|e| e.to_string())?;
        if self.destination.as_os_str().is_empty() {
            return Err("destination is empty; set the file the template writes".into());
        }
        if self.destination.file_name().is_none() {
            return Err(format!(
                "destination {} is not a file path",
                self.destination.display()
            ));
        }
        if let Some(block) = &self.block
            && (block.trim().is_empty() || block.contains(['\n', '\r']))
        {
            return Err(format!(
                "block {block:?} is not a usable name: give one line of text, such as \"rumor\""
            ));
        }
        if let Some(owner) = &self.owner {
            write::Ownership::parse(owner)?;
        }
        if let Some(perms) = self.perms
            && perms > 0o7777
        {
            return Err(format!("perms {perms:o} is not a file mode (0000-7777)"));
        }
        for (what, command) in [("check", &self.check), ("reload", &self.reload)] {
            if command.as_ref().is_some_and(|c| c.trim().is_empty()) {
                return Err(format!("{what} is empty; remove it or give a command"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for TemplateConfig {
    /// `template SOURCE -> DESTINATION`, for logs and `rumor info`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "template {} -> {}",
            self.source.path.display(),
            self.destination.display()
        )?;
        if let Some(block) = &self.block {
            write!(f, " (block {block})")?;
        }
        Ok(())
    }
}

/// What a template handler has done, as `rumor info` and `rumor plugin info` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateStatus {
    pub destination: String,
    /// Renders done (up-to-date runs are not renders).
    pub renders: u64,
    /// Renders that replaced the file.
    pub written: u64,
    pub render_failures: u64,
    /// Candidates the check refused (the live file was kept).
    pub check_failures: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// The last error, cleared by the next render that succeeds.
    pub last_error: Option<String>,
    /// When it last rendered, in milliseconds since the Unix epoch.
    pub last_render_unix_ms: Option<u64>,
}

/// A template handler as a [`Runtime`].
pub struct Template {
    membership: group::Membership,
    wait: Option<Wait>,
    members: watch::Receiver<Option<Members>>,
    local: watch::Receiver<LocalNode>,
}

impl Template {
    /// The runtime of handler `handler`, joined to its reload group.
    pub fn new(handler: &str, config: &TemplateConfig, context: &RuntimeContext) -> Template {
        Template {
            membership: context.groups.join(handler, config),
            wait: config.wait,
            members: context.members.clone(),
            local: context.local.clone(),
        }
    }

    async fn render(&self, env: BTreeMap<String, String>, timeout: Duration) -> RunResult {
        let started_at = SystemTime::now();
        let start = Instant::now();
        // The first list, if the agent has not published one yet (a handler starting with the
        // agent).
        let mut members = self.members.clone();
        let _ = members.wait_for(Option::is_some).await;
        let group = self.membership.group();
        if let Some(wait) = self.wait
            && !group.up_to_date(&self.inputs())
        {
            wait_quiet(members, wait).await;
        }
        let outcome = group.render(self.inputs(), &env, timeout).await;
        outcome.into_result(started_at, start.elapsed())
    }

    fn inputs(&self) -> group::Inputs {
        group::Inputs {
            members: self.members.borrow().clone().unwrap_or_default(),
            local: self.local.borrow().clone(),
        }
    }
}

/// Sleeps until the member list has been quiet for `wait.min`, at most `wait.max`.
async fn wait_quiet(mut members: watch::Receiver<Option<Members>>, wait: Wait) {
    use tokio::time::Instant;
    members.mark_unchanged();
    let mut quiet = quiescence::Quiet::start(wait, Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(quiet.deadline()) => return,
            changed = members.changed() => match changed {
                Ok(()) => quiet.changed(Instant::now()),
                Err(_) => {
                    tokio::time::sleep_until(quiet.deadline()).await;
                    return;
                }
            },
        }
    }
}

impl Runtime for Template {
    fn run<'r>(&'r self, run: &Run<'_>) -> RunFuture<'r> {
        Box::pin(self.render(run.env.clone(), run.timeout))
    }

    fn start<'r>(&'r self, start: &Start<'_>) -> Option<RunFuture<'r>> {
        Some(Box::pin(self.render(start.env.clone(), start.timeout)))
    }

    fn details(&self) -> Option<RuntimeDetails> {
        Some(RuntimeDetails::Template(self.membership.status()))
    }
}
