//! What operators watch: Prometheus metrics and request ids.

use std::net::SocketAddr;

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, Fault};

use crate::{support::start_binary, support::*};

pub async fn scrape(metrics: SocketAddr) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::get(format!("http://{metrics}/metrics")).await.expect("scrape");
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
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The binary has a registry of its own, so every count below is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_calls_made() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;
    let grant = binary.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();
    let upsert = |event_id: &str| {
        with_key(
            ACME_KEY,
            pb::UpsertEventRequest {
                mode: Default::default(),
                user: by_sub(&grant.sub),
                calendar_id: calendar.clone(),
                event: Some(event(event_id)),
            },
        )
    };
    let client = binary.client.clone();
    client.clone().upsert_event(upsert("evt-1")).await.expect("ok");
    client.clone().upsert_event(upsert("")).await.expect_err("invalid");
    fake.expire_access_tokens();
    client
        .clone()
        .upsert_event(upsert("evt-2"))
        .await
        .expect("401, refreshed, repeated");
    fake.inject(Fault::status(Endpoint::UpsertEvent, 503));
    client
        .clone()
        .upsert_event(upsert("evt-3"))
        .await
        .expect("503, retried");

    let text = scrape(binary.metrics).await;
    for (series, expected) in [
        (
            "calgate_rpc_requests_total{method=\"BuildAuthorizeUrl\",code=\"OK\"}",
            1.0,
        ),
        ("calgate_rpc_requests_total{method=\"ExchangeCode\",code=\"OK\"}", 1.0),
        ("calgate_rpc_requests_total{method=\"UpsertEvent\",code=\"OK\"}", 3.0),
        (
            "calgate_rpc_requests_total{method=\"UpsertEvent\",code=\"INVALID_ARGUMENT\"}",
            1.0,
        ),
        (
            "calgate_rpc_duration_seconds_count{method=\"UpsertEvent\",code=\"OK\"}",
            3.0,
        ),
        (
            "calgate_upstream_requests_total{endpoint=\"upsert_event\",status=\"202\"}",
            3.0,
        ),
        (
            "calgate_upstream_requests_total{endpoint=\"upsert_event\",status=\"401\"}",
            1.0,
        ),
        (
            "calgate_upstream_requests_total{endpoint=\"upsert_event\",status=\"503\"}",
            1.0,
        ),
        (
            "calgate_upstream_requests_total{endpoint=\"oauth_token\",status=\"200\"}",
            2.0,
        ),
        ("calgate_token_refreshes_total{outcome=\"refreshed\"}", 1.0),
        ("calgate_grants{status=\"active\"}", 1.0),
        ("calgate_breaker_state{breaker=\"acme-client@uk\"}", 0.0),
        (
            "calgate_budget_limit{application=\"acme-client@uk\",window=\"second\"}",
            10_000.0,
        ),
        (
            "calgate_budget_limit{application=\"acme-client@uk\",window=\"minute\"}",
            100_000.0,
        ),
        ("calgate_ready ", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(expected), "{series} in\n{text}");
    }
    // Every request that reached Cronofy was paid for by the application's budget.
    let sent: f64 = text
        .lines()
        .filter(|l| l.starts_with("calgate_upstream_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        sample(
            &text,
            "calgate_budget_requests_total{application=\"acme-client@uk\",outcome=\"admitted\"}"
        ),
        Some(sent),
        "{text}"
    );
    assert!(
        text.contains("calgate_rpc_duration_seconds_bucket{le="),
        "latency histogram"
    );
    for secret in fake.issued_secrets() {
        assert!(!text.contains(&secret), "no token in metrics");
    }
    binary.stop().await;
}

/// Paths nobody serves (any caller can send them, authenticated or not)
/// count under one `method="unknown"` label: the exposition stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_share_one_metric_label() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;
    let mut grpc = tonic::client::Grpc::new(binary.channel());
    for n in 0..300usize {
        let filler = "x".repeat(3_000 + (n * 31) % 9_000);
        let path = if n % 2 == 0 {
            format!("/no.such.Service{n}/{filler}")
        } else {
            format!("/calgate.v1.CalendarWriteService/{filler}{n}")
        };
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary(
                with_key(ACME_KEY, ()),
                path.parse().expect("path"),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .expect_err("nobody serves it");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    let text = scrape(binary.metrics).await;
    assert_eq!(
        sample(
            &text,
            "calgate_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"
        ),
        Some(300.0),
        "{text}"
    );
    assert!(!text.contains("xxxxxxxx"), "no path reaches a label");
    assert!(text.len() < 64 * 1024, "exposition of {} bytes", text.len());
    binary.stop().await;
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
