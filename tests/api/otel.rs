//! OpenTelemetry export (`--features otel`): the binary sends its spans to an
//! OTLP collector. The collector here is a bare HTTP/2 endpoint that keeps the
//! request bodies; protobuf stores strings verbatim, so they can be searched.
#![cfg(feature = "otel")]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::header, response::IntoResponse, routing::post};
use calgate::grpc::pb;

use crate::{support::start_binary_env, support::*};

async fn export(State(seen): State<Arc<Mutex<Vec<u8>>>>, body: Bytes) -> impl IntoResponse {
    seen.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&body);
    // An empty ExportTraceServiceResponse in one gRPC frame.
    (
        [
            (header::CONTENT_TYPE, "application/grpc"),
            ("grpc-status".parse().expect("name"), "0"),
        ],
        vec![0u8; 5],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_with_their_request_id() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collector = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", collector.local_addr().expect("addr"));
    let router = Router::new()
        .route(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            post(export),
        )
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(collector, router).await });

    let fake = start_fake().await;
    let work = Workdir::new();
    // Only the child process sees these variables.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut binary = start_binary_env(&fake, &work, |_| {}, &env).await;
    let mut request = with_key(
        ACME_KEY,
        pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            ..Default::default()
        },
    );
    request
        .metadata_mut()
        .insert("x-request-id", "otel-trace-me-7".parse().expect("header"));
    binary.client.clone().build_authorize_url(request).await.expect("call");
    binary.stop().await;

    let mut exported = Vec::new();
    for _ in 0..50 {
        exported = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if exported.windows(15).any(|w| w == b"otel-trace-me-7") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let contains = |needle: &[u8]| exported.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(b"otel-trace-me-7"),
        "the rpc span and its request id were exported"
    );
    assert!(contains(b"BuildAuthorizeUrl"));
    assert!(contains(b"calgate"), "service name");
}
