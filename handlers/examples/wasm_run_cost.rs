//! What one handler run costs the process that runs it: a WASM handler (a fresh instance of a
//! cached module per run) against a shell handler doing the same (answering `ok`), run one
//! after the other through the same [`Runtime`] interface the dispatcher uses. Also how long
//! the default fuel lasts in a loop, which is what `DEFAULT_FUEL` is sized by.
//!
//! ```text
//! cargo run --release -p rumor-handlers --example wasm_run_cost -- [RUNS]
//! ```
//!
//! CPU is this process's (getrusage), plus its children's for the shell: everything a run
//! costs the host. docs/performance.md keeps the figures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumor_handlers::shell::Shell;
use rumor_handlers::wasm::limits::DEFAULT_FUEL;
use rumor_handlers::{Event, LocalNode, Run, Runtime, UserEvent, WasmConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/wasm")
        .join(format!("{name}.wat"))
}

fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn total_cpu() -> Duration {
    cpu(libc::RUSAGE_SELF) + cpu(libc::RUSAGE_CHILDREN)
}

async fn measure(label: &str, runtime: &dyn Runtime, runs: u32) {
    let event = Event::User(UserEvent {
        ltime: 1,
        name: "bench".into(),
        payload: b"web v42".to_vec(),
        coalesce: false,
        origin: "bench".into(),
    });
    let local = LocalNode {
        name: "bench-1".into(),
        tags: [("role".to_string(), "web".to_string())].into(),
    };
    let env = BTreeMap::new();
    let run = Run::new(label, &event, &local, &env, Duration::from_secs(10));
    // The first run compiles the module (or warms the page cache for the shell).
    let first = runtime.run(&run).await;
    assert!(first.success(), "{label}: {first:?}");
    let (cpu_before, wall) = (total_cpu(), Instant::now());
    for _ in 0..runs {
        let result = runtime.run(&run).await;
        assert_eq!(result.stdout, b"ok\n", "{label}: {result:?}");
    }
    let wall = wall.elapsed() / runs;
    let cpu = (total_cpu() - cpu_before) / runs;
    println!(
        "{label:<6} {runs} runs: {:>8.1} µs wall, {:>8.1} µs CPU per run",
        wall.as_secs_f64() * 1e6,
        cpu.as_secs_f64() * 1e6
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runs: u32 = std::env::args()
        .nth(1)
        .map_or(2000, |n| n.parse().expect("RUNS is a number"));
    let wasm = rumor_handlers::wasm::Wasm::new(&WasmConfig::new(fixture("ok")));
    measure("wasm", &wasm, runs).await;
    let shell = Shell {
        command: "echo ok".into(),
    };
    measure("shell", &shell, runs.min(500)).await;

    let spin = rumor_handlers::wasm::Wasm::new(&WasmConfig::new(fixture("spin")));
    measure_fuel(&spin).await;
}

async fn measure_fuel(spin: &dyn Runtime) {
    let event = Event::User(UserEvent {
        ltime: 1,
        name: "spin".into(),
        payload: Vec::new(),
        coalesce: false,
        origin: "bench".into(),
    });
    let local = LocalNode::default();
    let env = BTreeMap::new();
    let run = Run::new("spin", &event, &local, &env, Duration::from_secs(60));
    let mut times = Vec::new();
    for _ in 0..5 {
        let before = cpu(libc::RUSAGE_SELF);
        let result = spin.run(&run).await;
        assert_eq!(result.error.as_deref(), Some("out of fuel"), "{result:?}");
        times.push((result.duration, cpu(libc::RUSAGE_SELF) - before));
    }
    times.sort();
    println!(
        "a loop runs out of the default fuel ({DEFAULT_FUEL}) after {:.1} ms, {:.1} ms of CPU \
         (median of 5)",
        times[2].0.as_secs_f64() * 1e3,
        times[2].1.as_secs_f64() * 1e3
    );
}
