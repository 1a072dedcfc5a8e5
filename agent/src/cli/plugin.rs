//! `rumor plugin`: install, list, inspect, configure and remove plugins (through the agent),
//! and sign your own (locally).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::output::Output;
use super::{ControlArgs, Format, FormatArg, split_key_value};
use crate::control::api::{PluginChangeResponse, PluginInstallRequest, PluginSetRequest};
use crate::plugin::checksum::hash_folder;
use crate::plugin::manifest::MANIFEST;
use crate::plugin::signature::{self, SIGNATURE};

/// Plugins: folders of templates, scripts and settings that add handlers to the agent.
///
/// `rumor plugin install haproxy --set backend_tag=role=web` is all it takes to make this
/// host's haproxy follow the web members. Built in: haproxy, memcached, hosts (see `rumor
/// plugin list --available`); others install from a folder or a .tar.gz. The agent checks
/// everything first (settings, checksums, signatures), installs into its plugin directory and
/// runs the plugin's handlers at once; `rumor info` and `rumor plugin info` show how they run.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PluginCommand,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, clap::Subcommand)]
enum PluginCommand {
    Install(InstallArgs),
    List(ListArgs),
    Info(InfoArgs),
    Set(SetArgs),
    Remove(RemoveArgs),
    Checksums(ChecksumsArgs),
    Keygen(KeygenArgs),
    Sign(SignArgs),
}

/// Install (or upgrade) a plugin: a built-in one by name, or a folder or .tar.gz by path.
///
/// Settings not given keep their defaults (or, on an upgrade, the values given before). The
/// install is refused, and nothing changes, on an unknown setting, a value of the wrong type, a
/// required setting left out, a file that does not match its checksum, or (with trusted keys)
/// a missing or wrong signature.
#[derive(Debug, clap::Args)]
struct InstallArgs {
    /// A built-in plugin's name (haproxy, memcached, hosts), or a plugin folder or .tar.gz.
    source: String,
    /// A setting, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    #[command(flatten)]
    format: FormatArg,
}

/// List the installed plugins, or with --available the built-in catalog.
#[derive(Debug, clap::Args)]
struct ListArgs {
    /// List the built-in plugins instead (what `rumor plugin install NAME` takes).
    #[arg(long)]
    available: bool,
    #[command(flatten)]
    format: FormatArg,
}

/// Show an installed plugin: its settings with their values, its handlers and how they ran.
#[derive(Debug, clap::Args)]
struct InfoArgs {
    name: String,
    #[command(flatten)]
    format: FormatArg,
}

/// Change settings of an installed plugin (checked first; applied at once).
#[derive(Debug, clap::Args)]
struct SetArgs {
    name: String,
    /// KEY=VALUE, one or more.
    #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_set)]
    settings: Vec<(String, String)>,
    #[command(flatten)]
    format: FormatArg,
}

/// Remove an installed plugin; its handlers stop (after finishing what they have queued).
#[derive(Debug, clap::Args)]
struct RemoveArgs {
    name: String,
}

/// Print the [files] table of a plugin folder's manifest: every file with its SHA-256.
///
/// Paste it at the end of plugin.toml (replacing the old one) after changing a file.
#[derive(Debug, clap::Args)]
struct ChecksumsArgs {
    /// The plugin folder.
    dir: PathBuf,
}

/// Make an Ed25519 key pair for signing plugins: the private key goes to a file (mode 0600),
/// the public key is printed, for the agents' plugin_trusted_keys.
#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Where to write the private key; an existing file is not overwritten.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Sign a plugin folder: writes plugin.sig, the signature of its plugin.toml (which holds every
/// file's SHA-256, so the signature covers them all). Checks the checksums first.
#[derive(Debug, clap::Args)]
struct SignArgs {
    /// The plugin folder.
    dir: PathBuf,
    /// The private key file `rumor plugin keygen` wrote.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    split_key_value(s, "VALUE")
}

pub async fn run(args: Args, out: &mut Output) -> anyhow::Result<()> {
    let control = args.control;
    match args.command {
        PluginCommand::Install(a) => {
            let request = PluginInstallRequest {
                source: source_for_agent(&a.source)?,
                set: a.set,
            };
            let response = control.client().plugin_install(&request).await?;
            changed(out, a.format.format, &response, "Installed")
        }
        PluginCommand::List(a) if a.available => {
            let response = control.client().plugin_catalog().await?;
            if a.format.format == Format::Json {
                return Ok(out.json(&response)?);
            }
            let mut rows = vec![
                ["NAME", "VERSION", "INSTALLED", "DESCRIPTION"]
                    .map(String::from)
                    .to_vec(),
            ];
            for p in response.plugins {
                let installed = if p.installed { "yes" } else { "no" };
                rows.push(vec![p.name, p.version, installed.into(), p.description]);
            }
            Ok(out.columns(&rows)?)
        }
        PluginCommand::List(a) => {
            let response = control.client().plugins().await?;
            if a.format.format == Format::Json {
                return Ok(out.json(&response)?);
            }
            if response.plugins.is_empty() {
                return Ok(out.line(
                    "No plugin installed (`rumor plugin list --available` shows the built-in ones).",
                )?);
            }
            let mut rows = vec![
                ["NAME", "VERSION", "STATE", "HANDLERS"]
                    .map(String::from)
                    .to_vec(),
            ];
            for p in response.plugins {
                let state = match &p.error {
                    None => "ok".to_string(),
                    Some(e) => format!("broken: {e}"),
                };
                rows.push(vec![p.name, p.version, state, p.handlers.join(",")]);
            }
            Ok(out.columns(&rows)?)
        }
        PluginCommand::Info(a) => {
            let info = control.client().plugin_info(&a.name).await?;
            if a.format.format == Format::Json {
                return Ok(out.json(&info)?);
            }
            let p = &info.plugin;
            out.line(format!("{} {}: {}", p.name, p.version, p.description))?;
            if let Some(e) = &p.error {
                out.line(format!("broken (the last good version runs): {e}"))?;
            }
            out.line("settings:")?;
            let mut rows = Vec::new();
            for s in &info.settings {
                let value = s.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                let origin = if s.given { "set" } else { "default" };
                rows.push(vec![
                    format!("  {}", s.name),
                    format!("= {value}"),
                    format!("({}, {origin})", s.kind),
                    s.help.clone(),
                ]);
            }
            out.columns(&rows)?;
            out.line("handlers:")?;
            for h in &info.handlers {
                let last = match &h.last {
                    None => "never ran".to_string(),
                    Some(l) => match &l.error {
                        Some(e) => format!("last run failed: {e}"),
                        None if l.exit_code == Some(0) => "last run ok".to_string(),
                        None => format!("last run failed (exit {:?})", l.exit_code),
                    },
                };
                out.line(format!(
                    "  {}: {} runs, {} failed; {last}",
                    h.name, h.runs, h.failures
                ))?;
                if let Some(rumor_handlers::RuntimeDetails::Template(t)) = &h.runtime {
                    out.line(format!(
                        "    {}: {} renders, {} written, {} check failures, {} reloads ({} failed){}",
                        t.destination,
                        t.renders,
                        t.written,
                        t.check_failures,
                        t.reloads,
                        t.reload_failures,
                        t.last_error
                            .as_ref()
                            .map(|e| format!("; last error: {e}"))
                            .unwrap_or_default()
                    ))?;
                }
            }
            Ok(())
        }
        PluginCommand::Set(a) => {
            let request = PluginSetRequest {
                name: a.name,
                set: a.settings,
            };
            let response = control.client().plugin_set(&request).await?;
            changed(out, a.format.format, &response, "Set")
        }
        PluginCommand::Remove(a) => {
            let name = a.name.clone();
            let response = control.client().plugin_remove(a.name).await?;
            out.line(format!("Removed {name}."))?;
            if !response.reload_ok {
                eprintln!("warning: {}", response.reload);
            }
            Ok(())
        }
        PluginCommand::Checksums(a) => {
            let files = hash_folder(&a.dir)?;
            out.line("[files]")?;
            for (path, hash) in files {
                out.line(format!("{path:?} = {hash:?}"))?;
            }
            Ok(())
        }
        PluginCommand::Keygen(a) => {
            let (private, public) = signature::generate()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&a.out)
                .with_context(|| format!("cannot create {}", a.out.display()))?;
            writeln!(file, "{private}")?;
            out.line(format!(
                "Private key written to {}. Public key, for the agents' plugin_trusted_keys:",
                a.out.display()
            ))?;
            out.line(public.to_base64())?;
            Ok(())
        }
        PluginCommand::Sign(a) => sign(&a.dir, &a.key, out),
    }
}

/// What the agent reports after an install or a set.
fn changed(
    out: &mut Output,
    format: Format,
    response: &PluginChangeResponse,
    what: &str,
) -> anyhow::Result<()> {
    if format == Format::Json {
        out.json(response)?;
    } else if let Some(p) = &response.plugin {
        out.line(format!(
            "{what} {} {}: handlers {}",
            p.name,
            p.version,
            p.handlers.join(", ")
        ))?;
    }
    if !response.reload_ok {
        eprintln!("warning: the agent's reload reported: {}", response.reload);
    }
    Ok(())
}

/// A path becomes absolute (the agent has another working directory); a bare name is a
/// built-in plugin.
fn source_for_agent(source: &str) -> anyhow::Result<String> {
    let path = Path::new(source);
    if source.contains('/')
        || path.exists()
        || source.ends_with(".tar.gz")
        || source.ends_with(".tgz")
    {
        let absolute =
            std::path::absolute(path).with_context(|| format!("cannot resolve {source}"))?;
        return Ok(absolute.to_string_lossy().into_owned());
    }
    Ok(source.to_string())
}

fn sign(dir: &Path, key: &Path, out: &mut Output) -> anyhow::Result<()> {
    let manifest_path = dir.join(MANIFEST);
    let manifest = std::fs::read(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let parsed = crate::plugin::manifest::Manifest::parse(&String::from_utf8_lossy(&manifest))?;
    crate::plugin::checksum::verify(dir, &parsed.files)
        .context("fix the manifest's [files] first (`rumor plugin checksums DIR`)")?;
    let key_text =
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?;
    let (sig, public) = signature::sign(&manifest, &key_text)?;
    std::fs::write(dir.join(SIGNATURE), sig)
        .with_context(|| format!("cannot write {}", dir.join(SIGNATURE).display()))?;
    out.line(format!(
        "Signed {} {}: {} written. Agents trust it with plugin_trusted_keys = [\"{}\"]",
        parsed.name,
        parsed.version,
        dir.join(SIGNATURE).display(),
        public.to_base64()
    ))?;
    Ok(())
}
