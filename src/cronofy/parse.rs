//! Cronofy's answers read from bytes: the pure half of the client, used by
//! it for every answer it reads — and, being pure, the part the fuzz targets
//! (`fuzz/`) drive with arbitrary input.

use serde::de::DeserializeOwned;

use super::{
    CronofyError, Endpoints, FreeBusyEntry, Host, TokenResponse,
    model::{BatchResponse, FreeBusyResponse},
    response::error_for_status,
};

/// A JSON body as `T`. The body may hold tokens: a failure names only the endpoint.
pub fn json<T: DeserializeOwned>(bytes: &[u8], endpoint: &'static str) -> Result<T, CronofyError> {
    serde_json::from_slice(bytes).map_err(|_| CronofyError::Decode { endpoint })
}

/// A token endpoint's 200 answer.
pub fn token(bytes: &[u8]) -> Result<TokenResponse, CronofyError> {
    json(bytes, "oauth_token")
}

/// The error for a non-2xx answer with this body (only a 422's body is read).
pub fn error(status: u16, bytes: &[u8]) -> CronofyError {
    let body = (status == 422)
        .then(|| serde_json::from_slice::<serde_json::Value>(bytes).ok())
        .flatten();
    error_for_status(status, body.as_ref(), None)
}

/// A batch's 207: one outcome per entry sent, in order.
pub fn batch(bytes: &[u8], sent: usize) -> Result<Vec<Result<(), CronofyError>>, CronofyError> {
    let body: BatchResponse = json(bytes, "batch")?;
    if body.batch.len() != sent {
        return Err(CronofyError::Decode { endpoint: "batch" });
    }
    Ok(body
        .batch
        .into_iter()
        .map(|item| {
            if (200..300).contains(&item.status) {
                Ok(())
            } else {
                Err(error_for_status(item.status, item.data.as_ref(), None))
            }
        })
        .collect())
}

/// One free/busy page and the next page's URL. A `next_page` on another
/// origin is refused: following it would send the user's bearer token elsewhere.
pub fn free_busy_page(
    bytes: &[u8],
    endpoints: &Endpoints,
) -> Result<(Vec<FreeBusyEntry>, Option<url::Url>), CronofyError> {
    let body: FreeBusyResponse = json(bytes, "free_busy")?;
    let next = match body.pages.and_then(|pages| pages.next_page) {
        None => None,
        Some(next) => {
            let next = url::Url::parse(&next).map_err(|_| CronofyError::Decode { endpoint: "free_busy" })?;
            if next.origin() != endpoints.url(Host::Api, &[]).origin() {
                return Err(CronofyError::Decode {
                    endpoint: "free_busy (next_page on another host)",
                });
            }
            Some(next)
        }
    };
    Ok((body.free_busy, next))
}
