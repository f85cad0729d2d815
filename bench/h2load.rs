//! Driving a server with h2load (Debian's nghttp2-client) and reading its
//! answer: throughput from its summary, latency percentiles from its
//! per-request log (h2load itself prints none).

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use prost::Message;
use tokio::process::Command;

/// One h2load run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Answered with HTTP 200 (gRPC errors too: check grpc-status elsewhere).
    pub succeeded: u64,
    /// Requests per second over the run.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// CPU time the server used per call.
    pub cpu_per_call: Duration,
    /// The server's context switches per call.
    pub switches_per_call: f64,
}

/// Writes a gRPC message frame (uncompressed flag, big-endian length, body) to `path`.
pub fn write_frame(path: &Path, message: &impl Message) -> anyhow::Result<()> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(body.len())?.to_be_bytes());
    frame.extend_from_slice(&body);
    std::fs::write(path, frame)?;
    Ok(())
}

/// How `in_flight` calls are spread: up to 8 connections, the rest as streams on each.
fn shape(in_flight: u32) -> (u32, u32) {
    let connections = in_flight.clamp(1, 8);
    (connections, in_flight.div_ceil(connections))
}

/// Sends `requests` POSTs of the frame in `body` to `url`, `in_flight` at a time.
pub async fn run(url: &str, body: &Path, in_flight: u32, requests: u64, log: &Path) -> anyhow::Result<Load> {
    let (connections, streams) = shape(in_flight);
    // h2load appends to its log: start each run with an empty one.
    let _ = std::fs::remove_file(log);
    let output = Command::new("h2load")
        .args(["-t", "1", "-c", &connections.to_string(), "-m", &streams.to_string()])
        .args(["-n", &requests.to_string()])
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {}", crate::harness::API_KEY)])
        .arg("--log-file")
        .arg(log)
        .arg(url)
        .output()
        .await
        .context("run h2load (apt-get install nghttp2-client)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("h2load failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    }
    let summary = parse_summary(&stdout).with_context(|| format!("unexpected h2load output:\n{stdout}"))?;
    let mut latencies = read_latencies(log)?;
    latencies.sort_unstable();
    Ok(Load {
        cpu_per_call: Duration::ZERO,
        switches_per_call: 0.0,
        succeeded: summary.1,
        rps: summary.0,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

/// (req/s, succeeded) from h2load's summary.
fn parse_summary(stdout: &str) -> Option<(f64, u64)> {
    let finished = stdout.lines().find(|l| l.starts_with("finished in"))?;
    let rps = finished.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok()?;
    let requests = stdout.lines().find(|l| l.starts_with("requests:"))?;
    let succeeded = requests
        .split(", ")
        .find_map(|part| part.strip_suffix(" succeeded"))?
        .trim()
        .parse()
        .ok()?;
    Some((rps, succeeded))
}

/// Per-request durations from h2load's log: `start_µs \t status \t duration_µs`.
fn read_latencies(log: &Path) -> anyhow::Result<Vec<Duration>> {
    Ok(std::fs::read_to_string(log)?
        .lines()
        .filter_map(|line| line.split('\t').nth(2)?.parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect())
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_h2load_summary() {
        let out = "finished in 5.34ms, 937.03 req/s, 56.73KB/s\n\
                   requests: 5 total, 5 started, 5 done, 4 succeeded, 1 failed, 0 errored, 0 timeout\n";
        assert_eq!(parse_summary(out), Some((937.03, 4)));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_micros(99));
        assert_eq!(shape(64), (8, 8));
        assert_eq!(shape(16), (8, 2));
    }
}
