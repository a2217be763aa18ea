//! An open-loop load generator: requests start at a fixed rate whatever the answers' latency
//! (a closed-loop tool such as wrk waits for answers and so hides queueing), and each one's
//! latency is measured to the end of its body. Prints requests sent, answered and failed, and
//! latency percentiles.
//!
//! Usage: `rate-load URL RATE SECONDS BODY [HEADER: VALUE]...`

use std::time::{Duration, Instant};

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        return Err("usage: rate-load URL RATE SECONDS BODY [HEADER: VALUE]...".into());
    }
    let (url, body) = (args[1].clone(), args[4].clone());
    let rate: f64 = args[2].parse().map_err(|_| "RATE must be a number")?;
    let seconds: f64 = args[3].parse().map_err(|_| "SECONDS must be a number")?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse()?);
    for header in &args[5..] {
        let (name, value) = header.split_once(':').ok_or("headers are HEADER: VALUE")?;
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?,
            value.trim().parse()?,
        );
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(4096)
        .tcp_nodelay(true)
        .build()?;
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let (client, url, body, sender) =
            (client.clone(), url.clone(), body.clone(), sender.clone());
        tokio::spawn(async move {
            let began = Instant::now();
            let outcome = match client.post(&url).body(body).send().await {
                Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                _ => false,
            };
            let _ = sender.send((outcome, began.elapsed()));
        });
    }
    drop(sender);
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0;
    while let Some((ok, latency)) = receiver.recv().await {
        if ok {
            latencies.push(latency);
        } else {
            failed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "sent {total} at {rate}/s over {elapsed:.1} s: answered {} failed {failed}  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
        latencies.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
