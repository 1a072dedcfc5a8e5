//! `rumor`: the agent daemon and its command-line client in one binary.

fn main() -> std::process::ExitCode {
    rumor::cli::main()
}

/// `pow` inside the binary, so it does not load libm: two dependencies call it (minijinja's
/// `**` and tokio's multi-thread scheduler statistics, linked in through hickory), and libm's
/// mapping alone would cost every agent about 0.3 MB of resident memory for that one function
/// (docs/performance.md#memory). The `libm` crate's `pow` is a port of musl's.
#[unsafe(no_mangle)]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}
