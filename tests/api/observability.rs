//! What operators watch: Prometheus metrics and request ids.

use std::time::Duration;

use calgate::{
    fake_cronofy::{Endpoint, Fault},
    grpc::pb,
};

use crate::helpers::*;

async fn scrape(app: &TestApp) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{}/metrics", app.metrics_addr))
        .await
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    response.text().await.expect("body")
}

/// The value of the first sample line starting with `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_cover_rpcs_upstream_calls_refreshes_grants_and_breakers() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let upsert = |event_id: &str| {
        app.req(pb::UpsertEventRequest {
            user: by_sub(&grant.sub),
            calendar_id: calendar.clone(),
            event: Some(event(event_id)),
        })
    };
    app.client.clone().upsert_event(upsert("evt-1")).await.expect("ok");
    app.client.clone().upsert_event(upsert("")).await.expect_err("invalid");
    app.clock.advance(Duration::from_secs(3600));
    app.fake.inject(Fault::status(Endpoint::UpsertEvent, 503));
    app.client
        .clone()
        .upsert_event(upsert("evt-2"))
        .await
        .expect("refreshed and retried");

    let text = scrape(&app).await;
    for series in [
        "calgate_rpc_requests_total{method=\"UpsertEvent\",code=\"OK\"}",
        "calgate_rpc_requests_total{method=\"UpsertEvent\",code=\"INVALID_ARGUMENT\"}",
        "calgate_rpc_requests_total{method=\"ExchangeCode\",code=\"OK\"}",
        "calgate_rpc_duration_seconds_count{method=\"UpsertEvent\",code=\"OK\"}",
        "calgate_upstream_requests_total{endpoint=\"upsert_event\",status=\"202\"}",
        "calgate_upstream_requests_total{endpoint=\"upsert_event\",status=\"503\"}",
        "calgate_upstream_requests_total{endpoint=\"oauth_token\",status=\"200\"}",
        "calgate_token_refreshes_total{outcome=\"refreshed\"}",
        "calgate_grants{status=\"active\"}",
        "calgate_breaker_state{breaker=\"acme/uk\"}",
    ] {
        assert!(
            sample(&text, series).is_some_and(|v| v >= 0.0),
            "missing {series} in\n{text}"
        );
    }
    assert!(sample(&text, "calgate_grants{status=\"active\"}").is_some_and(|v| v >= 1.0));
    assert!(
        text.contains("calgate_rpc_duration_seconds_bucket{le="),
        "latency histogram"
    );
    for secret in app.fake.issued_secrets() {
        assert!(!text.contains(&secret), "no token in metrics");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let app = spawn_app().await;
    let mut request = app.req(pb::GetGrantRequest {
        user: Some(pb::get_grant_request::User::Sub("acc_nobody".into())),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-from-caller-7".parse().expect("header"));
    let status = app.client.clone().get_grant(request).await.expect_err("not found");
    assert_eq!(
        status.metadata().get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("req-from-caller-7"),
        "echoed on errors too"
    );
    let response = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            ..Default::default()
        }))
        .await
        .expect("url");
    let made = response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(made.len(), 32, "a fresh id when the caller sent none");
    assert!(made.bytes().all(|b| b.is_ascii_hexdigit()));
}
