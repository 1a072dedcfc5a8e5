//! `hot-text`: regenerates `agent/hot-text.ld`, the linker script that puts the code an agent
//! and the common CLI commands run next to each other in the release binary.
//!
//! ```sh
//! cargo run --release -p rumor-tests --bin hot-text     # needs valgrind and nm
//! ```
//!
//! Why: the kernel maps 64 KiB of a program's text around every page it touches, and the
//! functions an agent runs were scattered through all of the binary's text: most of it ended
//! up resident. Grouped, it maps little more than what it runs (at `opt-level = "s"`, 1.5 of
//! 3.3 MB of text; one agent of a 50-node cluster, 4.4–4.7 instead of 5.65 MB of VmRSS).
//! See README, Performance.
//!
//! How: it builds the release binary, runs one agent under callgrind through a life like a
//! cluster member's (join, user events with a shell handler, queries, control commands,
//! metrics, a member that crashes, leaving), then the common CLI commands, and writes one
//! input-section pattern per function that ran, the agent's first, then the CLI's. Symbols
//! are v0-mangled (`.cargo/config.toml`), so a generic function's pattern names its type
//! arguments; crate disambiguators and back-references, which change with any dependency or
//! compiler update, are wildcards, so the script stays valid until functions are renamed.
//! Functions added since it was written simply land in the rest of the text.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rumor_tests::bench::host::release_rumor;
use rumor_tests::ports::free_port;

#[derive(Parser)]
#[command(about = "Regenerate agent/hot-text.ld from a callgrind profile of an agent and the CLI")]
struct Args {
    /// Where to write the linker script [default: agent/hot-text.ld in the workspace].
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = args.out.unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../agent/hot-text.ld")
            .to_path_buf()
    });
    for tool in ["valgrind", "nm"] {
        Command::new(tool)
            .arg("--version")
            .output()
            .with_context(|| format!("{tool} is needed (apt-get install valgrind binutils)"))?;
    }
    let bin = release_rumor()?;
    let dir = tempfile::tempdir()?;
    let profiles = profile(&bin, dir.path())?;
    let defined = defined_functions(&bin)?;
    let agent = executed(&profiles.agent, &defined)?;
    let mut cli = BTreeSet::new();
    for path in &profiles.cli {
        cli.extend(executed(path, &defined)?);
    }
    let mut patterns = Vec::new();
    let mut seen = BTreeSet::new();
    let cli_only = cli.iter().filter(|f| !agent.contains(*f));
    for name in agent.iter().chain(cli_only) {
        let pattern = pattern(name);
        if seen.insert(pattern.clone()) {
            patterns.push(pattern);
        }
    }
    std::fs::write(&out, script(&patterns))
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "{}: {} patterns ({} functions the agent ran, {} more the CLI did)",
        out.display(),
        patterns.len(),
        agent.len(),
        cli.len() - cli.intersection(&agent).count()
    );
    Ok(())
}

/// Where callgrind wrote its profiles.
struct Profiles {
    agent: PathBuf,
    cli: Vec<PathBuf>,
}

/// Runs the agent under callgrind through its workload, then each CLI command.
fn profile(bin: &Path, dir: &Path) -> anyhow::Result<Profiles> {
    let stamps = dir.join("stamps");
    std::fs::create_dir_all(&stamps)?;
    let (pa, pb, pc, metrics) = (free_port(), free_port(), free_port(), free_port());
    let seed = format!("127.0.0.1:{pb}");
    let b = agent(bin, dir, "b", pb, &[], None)?;
    let user = format!(
        "user:bench=date +%s%N >> {}/$SERF_SELF_NAME",
        stamps.display()
    );
    let agent_out = dir.join("agent.out");
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let a = agent(
        bin,
        dir,
        "a",
        pa,
        &[
            "--join",
            &seed,
            "--tag",
            "role=web",
            "--event-handler",
            &user,
            "--event-handler",
            "query:bench=echo ok",
            "--event-handler",
            "member-join,member-failed=cat > /dev/null",
            "--metrics",
            &metrics_addr,
        ],
        Some(&agent_out),
    )?;
    let c = agent(bin, dir, "c", pc, &["--join", &seed], None)?;
    let sock = |n: &str| dir.join(n).join("control.sock");
    let cli = |node: &str, args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new(bin)
            .args(args)
            .arg("--control")
            .arg(sock(node))
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("rumor {} failed: {status}", args.join(" "));
        }
        Ok(())
    };
    wait_until(Duration::from_secs(60), "3 members alive on a", || {
        let out = Command::new(bin)
            .args(["members", "--control"])
            .arg(sock("a"))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.matches("alive").count() == 3).then_some(())
    })?;
    for k in 0..5 {
        cli("b", &["event", "bench", &format!("x{k}")])?;
        std::thread::sleep(Duration::from_millis(500));
        cli("b", &["query", "bench"])?;
    }
    for args in [
        &["members"][..],
        &["members", "--format", "json"],
        &["events", "--format", "json"],
        &["info"],
        &["tags", "--set", "version=2"],
        &["reachability"],
        &["event", "from-a", "y"],
        &["query", "bench"],
    ] {
        cli("a", args)?;
    }
    let _ = std::net::TcpStream::connect(&metrics_addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
        s.read_to_end(&mut Vec::new())
    });
    // A member that crashes, then one that leaves; then the agent itself stops.
    kill(&c, libc::SIGKILL);
    std::thread::sleep(Duration::from_secs(8));
    cli("b", &["leave"])?;
    std::thread::sleep(Duration::from_secs(5));
    kill(&a, libc::SIGTERM);
    wait_exit(a, Duration::from_secs(60))?;
    wait_exit(b, Duration::from_secs(10))?;

    // The CLI, against an agent of its own.
    let d = agent(
        bin,
        dir,
        "d",
        free_port(),
        &["--event-handler", "query:bench=echo ok"],
        None,
    )?;
    let mut cli_outs = Vec::new();
    for (i, args) in [
        &["event", "bench", "x"][..],
        &["query", "bench"],
        &["members"],
        &["members", "--format", "json"],
        &["members", "--tag", "role=web"],
        &["events", "--format", "json"],
        &["info"],
        &["tags", "--set", "v=1"],
        &["reachability"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.join(format!("cli-{i}.out"));
        let status = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--demangle=no")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(bin)
            .args(args)
            .arg("--control")
            .arg(sock("d"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("rumor {} under callgrind failed: {status}", args.join(" "));
        }
        cli_outs.push(out);
    }
    kill(&d, libc::SIGTERM);
    wait_exit(d, Duration::from_secs(10))?;
    Ok(Profiles {
        agent: agent_out,
        cli: cli_outs,
    })
}

/// Starts `rumor agent` named `name` on `port` (under callgrind if `callgrind_out` is set),
/// and waits for its control socket.
fn agent(
    bin: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    extra: &[&str],
    callgrind_out: Option<&Path>,
) -> anyhow::Result<Agent> {
    let data = dir.join(name);
    let mut command = match callgrind_out {
        Some(out) => {
            let mut c = Command::new("valgrind");
            c.arg("--tool=callgrind")
                .arg("--demangle=no")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command
        .args(["agent", "--node", name, "--profile", "local"])
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?);
    let child = Agent(Some(
        command
            .spawn()
            .with_context(|| format!("cannot start agent {name}"))?,
    ));
    let sock = data.join("control.sock");
    wait_until(Duration::from_secs(60), &format!("agent {name}"), || {
        sock.exists().then_some(())
    })?;
    Ok(child)
}

fn wait_until<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An agent this program started: killed if it is still running when dropped (on an error
/// part-way), so a failed run leaves no agent behind.
struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill(agent: &Agent, signal: libc::c_int) {
    if let Some(child) = &agent.0 {
        // SAFETY: kill(2) of a child this program started and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }
}

fn wait_exit(mut agent: Agent, limit: Duration) -> anyhow::Result<()> {
    let Some(mut child) = agent.0.take() else {
        return Ok(());
    };
    let waited = wait_until(limit, "an agent to exit", || {
        child.try_wait().ok().flatten()
    });
    if waited.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    waited.map(|_| ())
}

/// The binary's function symbols.
fn defined_functions(bin: &Path) -> anyhow::Result<BTreeSet<String>> {
    let out = Command::new("nm").arg("--defined-only").arg(bin).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            "tTwW".contains(kind).then(|| name.to_owned())
        })
        .collect())
}

/// The functions of `defined` that a callgrind profile saw run (as caller or callee).
fn executed(profile: &Path, defined: &BTreeSet<String>) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(profile)
        .with_context(|| format!("cannot read {}", profile.display()))?;
    // Lines `fn=(id) name` (or `cfn=`); later mentions give the id alone.
    let mut names = std::collections::HashMap::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("fn=(")
            .or_else(|| line.strip_prefix("cfn=("))
        else {
            continue;
        };
        let Some((id, name)) = rest.split_once(')') else {
            continue;
        };
        let name = name.trim();
        if !name.is_empty() {
            names.insert(id.to_owned(), name.to_owned());
        }
        if let Some(name) = names.get(id)
            && defined.contains(name)
        {
            seen.insert(name.clone());
        }
    }
    Ok(seen)
}

/// An input-section pattern for a function, valid across builds: crate disambiguators
/// (`Cs…_`) and back-references (`B…_`, byte offsets that move when a disambiguator's length
/// does) become wildcards, and so do LLVM's suffixes for promoted and renamed local symbols.
fn pattern(symbol: &str) -> String {
    let mut out = String::with_capacity(symbol.len());
    let bytes = symbol.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at_ref = (bytes[i] == b'C' && bytes.get(i + 1) == Some(&b's')) || bytes[i] == b'B';
        if at_ref {
            let start = if bytes[i] == b'C' { i + 2 } else { i + 1 };
            let end = bytes[start..]
                .iter()
                .position(|b| !b.is_ascii_alphanumeric())
                .map(|n| start + n);
            if let Some(end) = end
                && bytes[end] == b'_'
                && end - start <= 12
                && (bytes[i] == b'C' || end - start <= 3)
                && !symbol[..i].ends_with(|c: char| c.is_ascii_digit())
            {
                out.push_str(&symbol[i..start]);
                out.push_str("*_");
                i = end + 1;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    if let Some(cut) = out.find(".llvm.") {
        out.truncate(cut);
        out.push('*');
    } else if let Some((name, suffix)) = out.rsplit_once('.')
        && !suffix.is_empty()
        && suffix.bytes().all(|b| b.is_ascii_digit())
    {
        // A number LLVM appends to keep local symbols apart; it changes from build to build.
        out = format!("{name}*");
    }
    out
}

/// The linker script: one output section, before `.text`, holding the listed functions (from
/// plain or `.text.unlikely.` sections: LLVM puts functions it deems cold in the latter).
fn script(patterns: &[String]) -> String {
    let mut s = String::from(
        "/* Generated by `cargo run --release -p rumor-tests --bin hot-text`; see that file.\n   \
         The functions an agent and the common CLI commands run, first in the binary, so\n   \
         the kernel maps little more than that. agent/build.rs applies it to release builds. */\n\
         SECTIONS\n{\n  .text.hot : {\n",
    );
    for p in patterns {
        s.push_str(&format!("    *(.text.{p} .text.unlikely.{p})\n"));
    }
    s.push_str("  }\n}\nINSERT BEFORE .text;\n");
    s
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn hashes_and_back_references_become_wildcards() {
        assert_eq!(
            pattern("_RNvCs4SlDTwGbcLR_5rumor4main"),
            "_RNvCs*_5rumor4main"
        );
        assert_eq!(
            pattern("_RNvMs3_NtCslNYArtu3iFV_5alloc7raw_vecINtB5_6RawVecE8grow_oneB1u_"),
            "_RNvMs3_NtCs*_5alloc7raw_vecINtB*_6RawVecE8grow_oneB*_"
        );
        assert_eq!(
            pattern("_RNvCsabc_3foo3bar.llvm.123456"),
            "_RNvCs*_3foo3bar*"
        );
        assert_eq!(pattern("_RNvCsabc_3foo4kind.1781"), "_RNvCs*_3foo4kind*");
        // An identifier that happens to hold `B…_` is left alone (it follows its length).
        assert_eq!(pattern("_RNvCsx_3foo5Bar_x"), "_RNvCs*_3foo5Bar_x");
    }
}
