//! Percentiles and the side-by-side table the benchmarks print.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of sorted `values` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One row: a metric measured for hpb and for upstream; `lower_is_better` decides how the
/// ratio is read.
pub struct Row {
    pub metric: String,
    pub hpb: f64,
    pub upstream: f64,
    pub unit: &'static str,
}

impl Row {
    pub fn new(metric: impl Into<String>, hpb: f64, upstream: f64, unit: &'static str) -> Row {
        Row {
            metric: metric.into(),
            hpb,
            upstream,
            unit,
        }
    }
}

/// Prints rows as a table with the ratio hpb / upstream.
pub fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} ({})", r.metric, r.unit))
        .collect();
    let w = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(38);
    println!(
        "  {:<w$} {:>14} {:>14} {:>10}",
        "metric", "hpb", "upstream", "hpb/upstr"
    );
    for (r, label) in rows.iter().zip(labels) {
        let ratio = if r.upstream != 0.0 {
            format!("{:.2}", r.hpb / r.upstream)
        } else {
            "-".to_string()
        };
        println!(
            "  {label:<w$} {:>14} {:>14} {:>10}",
            fmt(r.hpb),
            fmt(r.upstream),
            ratio
        );
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
