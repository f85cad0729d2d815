//! What the fake saw and sent, for tests and benchmarks to assert on.

use std::time::Instant;

use super::faults::Endpoint;

/// One request the api host received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The path as received.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The body as received (lossy UTF-8): what calgate sent, for tests to assert on.
    pub body: String,
    /// When it arrived (benchmarks check request rates against a budget).
    pub at: Instant,
}

/// The most of `times` (sorted) within any window of `window`'s length,
/// wherever it falls: how tests and benchmarks check a request budget.
pub fn busiest_window<T>(times: &[T], window: std::time::Duration) -> usize
where
    T: Copy + std::ops::Sub<Output = std::time::Duration>,
{
    let mut first = 0;
    let mut busiest = 0;
    for (last, at) in times.iter().enumerate() {
        while *at - times[first] >= window {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

impl RecordedRequest {
    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The event writes this request carried, as (method, event_id): one
    /// for an upsert or a delete, one per entry of a `/v1/batch` request.
    pub fn event_writes(&self) -> Vec<(String, String)> {
        let body = self.json().unwrap_or_default();
        let event_id = |data: &serde_json::Value| data["event_id"].as_str().unwrap_or_default().to_owned();
        match self.endpoint {
            Endpoint::UpsertEvent => vec![("POST".to_owned(), event_id(&body))],
            Endpoint::DeleteEvent => vec![("DELETE".to_owned(), event_id(&body))],
            Endpoint::Batch => body["batch"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|entry| {
                            (
                                entry["method"].as_str().unwrap_or_default().to_owned(),
                                event_id(&entry["data"]),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// How many requests this one counts as if each batch entry counts.
    pub fn weight(&self) -> usize {
        match self.endpoint {
            Endpoint::Batch => self.event_writes().len().max(1),
            _ => 1,
        }
    }

    /// The body or query parsed as form pairs (`application/x-www-form-urlencoded`).
    pub fn form(&self) -> Vec<(String, String)> {
        let source = if self.body.is_empty() {
            self.query.as_deref().unwrap_or_default()
        } else {
            &self.body
        };
        url::form_urlencoded::parse(source.as_bytes()).into_owned().collect()
    }
}

/// A push notification the fake delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentNotification {
    /// The channel's callback URL.
    pub url: String,
    /// The exact body sent (signed as sent).
    pub body: String,
    /// `Cronofy-HMAC-SHA256` as sent.
    pub signature: String,
    /// The HTTP status calgate answered (0: no answer).
    pub status: u16,
}
