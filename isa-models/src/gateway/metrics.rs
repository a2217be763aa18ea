//! What the gateway counts per deployment (provider and model), in Prometheus text format.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use parking_lot::RwLock;

use super::breaker::BreakerState;

/// Upper bounds (seconds) of the latency buckets: model calls take from milliseconds (a local
/// embedding) to minutes (a long answer).
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(first) = BUCKETS.iter().position(|bound| secs <= *bound) {
            for bucket in &self.buckets[first..] {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let n = bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
        );
    }
}

/// The counters of one deployment.
#[derive(Default)]
pub struct DeploymentMetrics {
    requests: AtomicU64,
    errors: RwLock<BTreeMap<&'static str, AtomicU64>>,
    latency: Histogram,
    first_token: Histogram,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cost_micro_usd: AtomicU64,
}

impl DeploymentMetrics {
    /// A request answered; `first_token` for streams.
    pub fn answered(&self, latency: Duration, first_token: Option<Duration>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency.record(latency);
        if let Some(ttft) = first_token {
            self.first_token.record(ttft);
        }
    }

    /// A failed attempt, by error class (`upstream`, `timeout`, `overloaded`, …).
    pub fn failed(&self, class: &'static str) {
        if let Some(counter) = self.errors.read().get(class) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.errors
            .write()
            .entry(class)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Tokens and cost of a request.
    pub fn used(&self, input_tokens: u64, output_tokens: u64, cost_usd: f64) {
        self.input_tokens.fetch_add(input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(output_tokens, Ordering::Relaxed);
        let micro = (cost_usd * 1e6).round().max(0.0) as u64;
        self.cost_micro_usd.fetch_add(micro, Ordering::Relaxed);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed attempts of a class so far.
    pub fn errors(&self, class: &str) -> u64 {
        self.errors
            .read()
            .get(class)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// One deployment's metrics and how to read its breaker.
pub(crate) struct Labeled {
    pub provider: String,
    pub model: String,
    pub metrics: Arc<DeploymentMetrics>,
    pub breaker: Box<dyn Fn() -> BreakerState + Send + Sync>,
}

/// Writes every deployment's metrics.
pub(crate) fn write_prometheus(deployments: &[Labeled]) -> String {
    let mut out = String::new();
    let labels = |d: &Labeled| {
        format!(
            "provider=\"{}\",model=\"{}\"",
            escape(&d.provider),
            escape(&d.model)
        )
    };
    let counter =
        |out: &mut String, name: &str, help: &str, value: &dyn Fn(&DeploymentMetrics) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for d in deployments {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(d), value(&d.metrics));
            }
        };
    counter(
        &mut out,
        "isa_model_requests_total",
        "Requests answered by a deployment.",
        &|m| m.requests().to_string(),
    );
    counter(
        &mut out,
        "isa_model_input_tokens_total",
        "Prompt tokens.",
        &|m| m.input_tokens.load(Ordering::Relaxed).to_string(),
    );
    counter(
        &mut out,
        "isa_model_output_tokens_total",
        "Generated tokens.",
        &|m| m.output_tokens.load(Ordering::Relaxed).to_string(),
    );
    counter(
        &mut out,
        "isa_model_cost_usd_total",
        "Cost in US dollars at the configured prices.",
        &|m| (m.cost_micro_usd.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP isa_model_errors_total Failed attempts by error class.\n# TYPE isa_model_errors_total counter"
    );
    for d in deployments {
        for (class, n) in d.metrics.errors.read().iter() {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "isa_model_errors_total{{{},class=\"{class}\"}} {n}",
                labels(d)
            );
        }
    }
    for (name, help, pick) in [
        (
            "isa_model_request_seconds",
            "Time from the request to the end of the answer.",
            (|m: &DeploymentMetrics| &m.latency) as fn(&DeploymentMetrics) -> &Histogram,
        ),
        (
            "isa_model_first_token_seconds",
            "Time from the request to the first streamed token.",
            |m: &DeploymentMetrics| &m.first_token,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for d in deployments {
            pick(&d.metrics).write(&mut out, name, &labels(d));
        }
    }
    let _ = writeln!(
        out,
        "# HELP isa_model_breaker_state Circuit breaker: 0 closed, 1 open, 2 half-open.\n# TYPE isa_model_breaker_state gauge"
    );
    for d in deployments {
        let state = match (d.breaker)() {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        };
        let _ = writeln!(out, "isa_model_breaker_state{{{}}} {state}", labels(d));
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
