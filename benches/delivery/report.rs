//! What a run prints and keeps: one table of figures, and the JSON that
//! `scripts/bench-table` reads (`when`, `scale`, `cores`, `figures`,
//! `isolation`).

use std::path::Path;

use chrono::Utc;
use serde::Serialize;

use crate::isolation::Isolation;

#[derive(Debug, Serialize)]
pub(crate) struct Figure {
    pub(crate) name: &'static str,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) target: &'static str,
    pub(crate) met: bool,
}

pub(crate) fn print_table(figures: &[Figure]) {
    println!("\n{:<72} {:>12}  {:<16} {:<10} met", "figure", "value", "unit", "target");
    for f in figures {
        println!(
            "{:<72} {:>12.1}  {:<16} {:<10} {}",
            f.name,
            f.value,
            f.unit,
            f.target,
            if f.met { "yes" } else { "NO" }
        );
    }
}

pub(crate) fn write(
    out: &Path,
    scale: f64,
    figures: &[Figure],
    isolated: &Isolation,
) -> anyhow::Result<()> {
    let report = serde_json::json!({
        "when": Utc::now().to_rfc3339(),
        "scale": scale,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "figures": figures,
        "isolation": isolated,
    });
    std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    Ok(())
}

/// The `p` quantile (0 to 1) of latencies sorted in microseconds, in ms.
pub(crate) fn percentile_ms(sorted_us: &[i64], p: f64) -> f64 {
    let at = ((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1));
    sorted_us.get(at).copied().unwrap_or(0) as f64 / 1000.0
}

/// This process's resident memory (API, dispatcher and receiver), in MiB.
pub(crate) fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
