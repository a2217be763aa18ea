//! Counters behind `/stats` and `/metrics`.

use std::{
    collections::{HashMap, VecDeque},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use parking_lot::Mutex;

/// Latencies kept for percentiles: the most recent ones, so memory stays bounded.
const LATENCY_WINDOW: usize = 4096;

/// Upper bounds (seconds) of the Prometheus histogram buckets for selection and tool latency.
pub(crate) const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with a window of recent samples for percentiles.
#[derive(Default)]
pub(crate) struct Latency {
    recent: Mutex<VecDeque<f64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        {
            let mut recent = self.recent.lock();
            if recent.len() == LATENCY_WINDOW {
                recent.pop_front();
            }
            recent.push_back(secs * 1e3);
        }
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            elapsed.as_nanos().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// The `q`-quantile (0..=1) of recent samples in milliseconds; 0 before any sample.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let mut samples: Vec<f64> = self.recent.lock().iter().copied().collect();
        if samples.is_empty() {
            return 0.0;
        }
        samples.sort_by(f64::total_cmp);
        let rank = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[rank.min(samples.len() - 1)]
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes the histogram in Prometheus text format.
    pub fn write_prometheus(&self, out: &mut String, name: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {count}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
    }
}

/// What the server counts about discovery and tool calls.
#[derive(Default)]
pub(crate) struct Stats {
    pub selection: Latency,
    pub selected: Mutex<HashMap<String, u64>>,
    pub tool_calls: Mutex<HashMap<String, ToolCounts>>,
    pub index_build_ms: AtomicU64,
}

#[derive(Default, Clone, Copy)]
pub(crate) struct ToolCounts {
    pub calls: u64,
    pub errors: u64,
}

impl Stats {
    pub fn record_selection(&self, elapsed: Duration, ids: impl IntoIterator<Item = String>) {
        self.selection.record(elapsed);
        let mut selected = self.selected.lock();
        for id in ids {
            *selected.entry(id).or_default() += 1;
        }
    }

    /// Counts a call of a registered tool (never of a name a client made up, so clients cannot
    /// grow this map).
    pub fn record_call(&self, tool: &str, is_error: bool) {
        let mut calls = self.tool_calls.lock();
        let counts = calls.entry(tool.to_owned()).or_default();
        counts.calls += 1;
        counts.errors += u64::from(is_error);
    }

    /// The `n` most selected ids, most selected first.
    pub fn most_selected(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .selected
            .lock()
            .iter()
            .map(|(id, count)| (id.clone(), *count))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_samples() {
        let latency = Latency::default();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        assert!((latency.percentile_ms(0.5) - 50.0).abs() <= 1.0);
        assert!((latency.percentile_ms(0.99) - 99.0).abs() <= 1.0);
        assert_eq!(latency.count(), 100);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let latency = Latency::default();
        latency.record(Duration::from_micros(300));
        latency.record(Duration::from_millis(30));
        let mut out = String::new();
        latency.write_prometheus(&mut out, "x", "test");
        assert!(out.contains("x_bucket{le=\"0.0005\"} 1"));
        assert!(out.contains("x_bucket{le=\"0.05\"} 2"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2"));
    }
}
