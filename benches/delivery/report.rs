//! What a set of runs prints and keeps: one table of figures a run, their
//! spread over the runs, and the JSON that `scripts/bench-table` reads
//! (`when`, `scale`, `cores`, and `runs`, each with its `figures` and
//! `isolation`).

use std::path::Path;

use chrono::Utc;
use serde::Serialize;

use crate::isolation::Isolation;

#[derive(Debug, Serialize)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) target: String,
    pub(crate) met: bool,
    /// A delivery rate as a share of the same run's ceiling, in percent.
    pub(crate) of_ceiling: Option<f64>,
}

impl Figure {
    /// A figure with no share of the ceiling.
    pub(crate) fn new(
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        target: impl Into<String>,
        met: bool,
    ) -> Self {
        Self { name: name.into(), value, unit, target: target.into(), met, of_ceiling: None }
    }
}

/// One run of the whole set.
#[derive(Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) figures: Vec<Figure>,
    pub(crate) isolation: Isolation,
}

pub(crate) fn print_table(figures: &[Figure]) {
    println!(
        "\n{:<72} {:>12}  {:<16} {:>10}  {:<18} met",
        "figure", "value", "unit", "of ceiling", "target"
    );
    for f in figures {
        println!(
            "{:<72} {:>12.1}  {:<16} {:>10}  {:<18} {}",
            f.name,
            f.value,
            f.unit,
            f.of_ceiling.map_or_else(String::new, |p| format!("{p:.0} %")),
            f.target,
            if f.met { "yes" } else { "NO" }
        );
    }
}

/// Every figure over the runs: min / median / max, and in how many runs
/// it met its target.
pub(crate) fn print_summary(runs: &[Run]) {
    println!(
        "\n{} runs, {} cores\n{:<72} {:>10} {:>10} {:>10}  {:<18} met",
        runs.len(),
        cores(),
        "figure",
        "min",
        "median",
        "max",
        "target"
    );
    let Some(first) = runs.first() else { return };
    for (i, figure) in first.figures.iter().enumerate() {
        let of = |pick: fn(&Figure) -> Option<f64>| -> Vec<f64> {
            runs.iter().filter_map(|r| r.figures.get(i).and_then(pick)).collect()
        };
        let values = of(|f| Some(f.value));
        let met = runs.iter().filter(|r| r.figures.get(i).is_some_and(|f| f.met)).count();
        let [min, median, max] = spread(values);
        println!(
            "{:<72} {min:>10.1} {median:>10.1} {max:>10.1}  {:<18} {met}/{}",
            figure.name,
            figure.target,
            runs.len()
        );
        let shares = of(|f| f.of_ceiling);
        if !shares.is_empty() {
            let [min, median, max] = spread(shares);
            let name = "  … as a share of the same run's ceiling (%)";
            println!("{name:<72} {min:>10.1} {median:>10.1} {max:>10.1}");
        }
    }
}

/// Min, median (the lower of the middle two) and max.
fn spread(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let at = |i: usize| values.get(i).copied().unwrap_or(f64::NAN);
    [at(0), at(values.len().saturating_sub(1) / 2), at(values.len().saturating_sub(1))]
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

pub(crate) fn write(out: &Path, scale: f64, runs: &[Run]) -> anyhow::Result<()> {
    write_json(out, serde_json::json!({ "scale": scale, "runs": runs }))
}

pub(crate) fn write_soak(
    out: &Path,
    duration: std::time::Duration,
    figures: &[Figure],
) -> anyhow::Result<()> {
    write_json(out, serde_json::json!({ "soak_s": duration.as_secs(), "figures": figures }))
}

/// `fields`, with when and on how many cores they were measured.
fn write_json(out: &Path, mut fields: serde_json::Value) -> anyhow::Result<()> {
    fields["when"] = Utc::now().to_rfc3339().into();
    fields["cores"] = cores().into();
    std::fs::write(out, serde_json::to_vec_pretty(&fields)?)?;
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
