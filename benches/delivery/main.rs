//! The design's performance figures, measured on this machine against the
//! real broker and database of the test environment (`scripts/test-env`):
//!
//! ```sh
//! eval "$(scripts/test-env env)"
//! cargo bench --bench delivery -- --scale 1 --out bench-results.json
//! ```
//!
//! Everything runs in this one process, as `hookgate serve` would, with the
//! integration tests' receiver (`tests/it/harness/receiver.rs`) beside it.
//! Prints one table a run and, with `--runs N`, min / median / max of every
//! figure; writes JSON (`scripts/bench-table` tabulates runs).
//!
//! `ceiling.rs` (what a minimal sender delivers to the same receiver, with
//! nothing of hookgate running) → `env.rs` (a scratch database and topics,
//! one app) → `phases.rs` (publish API, batches, sustained, latency,
//! fan-out, memory: one app) → `isolation.rs` (a healthy stream beside a
//! tarpit and a hanging endpoint: an app of its own) → `report.rs` (the
//! tables and the JSON).

// A test that cannot go on fails with the expectation it names; the
// harness's items are this binary's own, whatever their visibility.
#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)]

// The harness is shared with the integration tests; the bench uses its
// receiver only.
#[allow(dead_code)]
#[path = "../../tests/it/harness/mod.rs"]
mod harness;

mod ceiling;
mod env;
mod isolation;
mod phases;
mod report;
mod soak;
mod stages;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::env::Services;

// As in the `hookgate` binary: the allocator is part of what is measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Measures the performance figures against the test environment's broker
/// and database.
#[derive(Debug, Parser)]
#[command(name = "delivery")]
struct Args {
    /// PostgreSQL server to make a scratch database on.
    #[arg(long, env = "HOOKGATE_TEST_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Kafka brokers.
    #[arg(long, env = "HOOKGATE_TEST_KAFKA")]
    kafka_brokers: Option<String>,
    /// Where to write the results as JSON (relative to the package root,
    /// where `cargo bench` runs).
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Scale of the runs (1 = the full figures; smaller is quicker).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs of the whole set, each on fresh apps, databases and topics.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Instead of the set: the soak, this long (`10m`), at 2,000 events/s.
    #[arg(long, value_parser = humantime::parse_duration)]
    soak: Option<std::time::Duration>,
    /// Only the ceiling and the sustained phase, for profiling the
    /// dispatcher's hot path (`perf record` beside it); no isolation phases.
    #[arg(long)]
    sustained_only: bool,
    /// Passed by `cargo bench`; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let services = match Services::new(args.database_url, args.kafka_brokers) {
        Ok(services) => services,
        Err(message) => {
            eprintln!("bench: {message}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match hookgate::telemetry::init(hookgate::config::LogFormat::Text) {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("bench: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match args.soak {
            Some(duration) => run_soak(&services, duration, &args.out).await,
            None if args.sustained_only => run_sustained(&services, args.scale, args.runs).await,
            None => run(&services, args.scale, args.runs, &args.out).await,
        }
    };
    let code = match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error:#}");
            ExitCode::FAILURE
        }
    };
    // What a bounded shutdown left behind must not hold the exit.
    runtime.shutdown_timeout(hookgate::shutdown::EXIT_WAIT);
    code
}

async fn run_soak(
    services: &Services,
    duration: std::time::Duration,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let run_id = ulid::Ulid::new().to_string().to_lowercase();
    let figures = soak::run(services, &format!("{run_id}_soak"), duration).await?;
    report::print_table(&figures);
    report::write_soak(out, duration, &figures)?;
    println!("\nresults written to {}", out.display());
    Ok(())
}

/// The ceiling and the sustained phase, `runs` times; tables only.
async fn run_sustained(services: &Services, scale: f64, runs: u32) -> anyhow::Result<()> {
    for n in 1..=runs {
        println!("\nrun {n} of {runs}");
        let run_id = ulid::Ulid::new().to_string().to_lowercase();
        report::print_table(&phases::run(services, &run_id, scale.clamp(0.01, 10.0), true).await?);
    }
    Ok(())
}

async fn run(
    services: &Services,
    scale: f64,
    runs: u32,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let scale = scale.clamp(0.01, 10.0);
    let mut results = Vec::new();
    for n in 1..=runs {
        println!("\nrun {n} of {runs}");
        let run_id = ulid::Ulid::new().to_string().to_lowercase();
        let mut figures = phases::run(services, &run_id, scale, false).await?;
        let isolated = isolation::run(services, &format!("{run_id}_iso"), scale).await?;
        figures.extend(isolated.figures());
        report::print_table(&figures);
        isolated.print();
        results.push(report::Run { figures, isolation: isolated });
        // Written after every run: an interrupted set keeps what it measured.
        report::write(out, scale, &results)?;
    }
    if runs > 1 {
        report::print_summary(&results);
    }
    println!("\nresults written to {}", out.display());
    Ok(())
}
