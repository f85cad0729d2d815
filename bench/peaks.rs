//! Peak request rates at the fake Cronofy: what the budget scenarios check.

use std::time::Duration;

use fake_cronofy::RecordedRequest;
use time::OffsetDateTime;
use tokio::time::Instant;

/// The most upstream requests that arrived within one wall-clock second
/// (`started` and `started_wall` are the same moment on both clocks).
pub(crate) fn peak_in_clock_seconds(
    requests: &[RecordedRequest],
    started: Instant,
    started_wall: OffsetDateTime,
) -> usize {
    peak_in_clock_windows(requests, started, started_wall, 1)
}

/// The most upstream requests that arrived within one wall-clock window of
/// `seconds` (aligned on the unix epoch, as the shared budget's windows are).
pub(crate) fn peak_in_clock_windows(
    requests: &[RecordedRequest],
    started: Instant,
    started_wall: OffsetDateTime,
    seconds: i64,
) -> usize {
    let started = started.into_std();
    let mut per_window = std::collections::HashMap::<i64, usize>::new();
    for request in requests {
        let offset = if request.at >= started {
            time::Duration::try_from(request.at - started).unwrap_or_default()
        } else {
            -time::Duration::try_from(started - request.at).unwrap_or_default()
        };
        *per_window
            .entry((started_wall + offset).unix_timestamp().div_euclid(seconds))
            .or_default() += 1;
    }
    per_window.into_values().max().unwrap_or_default()
}

/// The most upstream requests that arrived within any `window`.
pub(crate) fn peak_in_window(requests: &[RecordedRequest], window: Duration) -> usize {
    let mut times: Vec<_> = requests.iter().map(|r| r.at).collect();
    times.sort_unstable();
    fake_cronofy::busiest_window(&times, window)
}
