//! What a peer with no credentials can make calgate hold (issue #25, item 2).
//! Health and server reflection need no key: connections, streams, unread
//! responses and requests that never finish are each bounded, measured on the
//! real binary by its resident set.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::net::TcpStream;
use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_request::MessageRequest};

use crate::{
    support::*,
    support::{Binary, start_binary},
};

const MIB: u64 = 1024;

/// An HTTP/2 connection that never opens its flow-control window: calgate
/// can send it headers but no response bytes.
async fn stalled_connection(binary: &Binary) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(binary.addr).await.expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake(tcp)
        .await
        .expect("HTTP/2");
    tokio::spawn(connection);
    client
}

fn grpc_request(binary: &Binary, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{}{path}", binary.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// One gRPC frame: uncompressed flag, length, message.
fn frame(message: &impl Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed.into()
}

/// Opens up to `streams` server-reflection streams on `client`, each sending
/// `requests` requests for calgate's whole descriptor and reading nothing.
/// Runs until the test ends: calgate decides how many streams it gets.
fn reflection_flood(binary: &Binary, mut client: h2::client::SendRequest<Bytes>, streams: usize, requests: usize) {
    let request = grpc_request(binary, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    let ask = frame(&ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "calgate.v1.CalendarWriteService".into(),
        )),
    });
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..streams {
            let Ok(ready) = client.ready().await else { return };
            client = ready;
            let Ok((answer, mut send)) = client.send_request(request.clone(), false) else {
                return;
            };
            for _ in 0..requests {
                if send.send_data(ask.clone(), false).is_err() {
                    break;
                }
            }
            held.push((answer, send));
        }
        std::future::pending::<()>().await;
        drop(held);
    });
}

/// Opens up to `streams` health checks on `client` that send headers and
/// never a request.
fn empty_health_flood(binary: &Binary, mut client: h2::client::SendRequest<Bytes>, streams: usize) {
    let request = grpc_request(binary, "/grpc.health.v1.Health/Check");
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..streams {
            let Ok(ready) = client.ready().await else { return };
            client = ready;
            let Ok(stream) = client.send_request(request.clone(), false) else {
                return;
            };
            held.push(stream);
        }
        std::future::pending::<()>().await;
        drop(held);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_credentials_cannot_make_calgate_hold_memory() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;
    let grant = binary.connect("ada").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = binary.rss_kib();

    for _ in 0..4 {
        let connection = stalled_connection(&binary).await;
        reflection_flood(&binary, connection, 1000, 20);
    }
    for _ in 0..30 {
        let connection = stalled_connection(&binary).await;
        empty_health_flood(&binary, connection, 1000);
    }
    // Long enough for every stream calgate lets in to have been answered as
    // far as it can be, and well within the request read deadline.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A well-behaved caller is served meanwhile.
    let started = Instant::now();
    Upsert::first_calendar(&fake, &grant.sub)
        .send(&binary.client)
        .await
        .expect("an authenticated write during the attack");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "the write took {took:?}");

    let peak = binary.peak_rss_kib().saturating_sub(idle);
    eprintln!("unauthenticated flood: idle {idle} KiB, peak +{peak} KiB, write took {took:?}");
    assert!(peak < 128 * MIB, "peak RSS grew {peak} KiB above idle ({idle} KiB)");
    binary.stop().await;
}

/// The `grpc-status` of a raw HTTP/2 call: from its headers (a trailers-only
/// answer) or its trailers.
async fn grpc_status(answer: h2::client::ResponseFuture) -> String {
    grpc_status_of(answer).await.expect("a grpc-status")
}

async fn grpc_status_of(answer: h2::client::ResponseFuture) -> Option<String> {
    let response = answer.await.ok()?;
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().ok().map(str::to_owned);
    }
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data.ok()?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.ok()??;
    trailers.get("grpc-status")?.to_str().ok().map(str::to_owned)
}

async fn open_connection(addr: std::net::SocketAddr) -> Option<h2::client::SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (client, connection) = tokio::time::timeout(Duration::from_secs(2), h2::client::handshake(tcp))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(connection);
    // The handshake needs no answer: a health check proves calgate kept it.
    let mut client = client.ready().await.ok()?;
    let (answer, mut send) = client
        .send_request(raw_request(addr, "/grpc.health.v1.Health/Check"), false)
        .ok()?;
    send.send_data(frame(&tonic_health::pb::HealthCheckRequest::default()), true)
        .ok()?;
    let status = tokio::time::timeout(Duration::from_secs(2), grpc_status_of(answer))
        .await
        .ok()??;
    (status == "0").then_some(client)
}

fn raw_request(addr: std::net::SocketAddr, path: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// Each limit on unauthenticated peers, made small enough to reach.
#[tokio::test]
async fn each_limit_on_unauthenticated_peers_holds() {
    let app = spawn_app_edited(|s| {
        s.grpc.max_connections = 4;
        s.grpc.request_read_timeout = Duration::from_millis(500);
        s.grpc.max_reflection_streams = 2;
        s.grpc.reflection_stream_lifetime = Duration::from_secs(1);
        s.grpc.max_health_watches = 1;
    })
    .await;
    let addr = app.addr;

    // Connections past the limit are closed as they are accepted.
    let mut held = Vec::new();
    for _ in 0..6 {
        if let Some(client) = open_connection(addr).await {
            held.push(client);
        }
    }
    assert!(held.len() <= 4, "{} connections held", held.len());
    assert!(held.len() >= 3, "only {} connections held", held.len());
    let mut client = held.pop().expect("a connection");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        open_connection(addr).await.is_some(),
        "a place comes back when a connection closes"
    );

    // A health check whose request never arrives is answered within the deadline.
    let started = Instant::now();
    let (answer, _send) = client
        .send_request(raw_request(addr, "/grpc.health.v1.Health/Check"), false)
        .expect("send");
    assert_eq!(grpc_status(answer).await, "4", "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Two reflection streams that read nothing; a third is refused.
    let ask = frame(&ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    });
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let (answer, mut send) = client
            .send_request(
                raw_request(addr, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
                false,
            )
            .expect("send");
        send.send_data(ask.clone(), false).expect("ask");
        stalled.push((answer, send));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (answer, _send) = client
        .send_request(
            raw_request(addr, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            false,
        )
        .expect("send");
    assert_eq!(grpc_status(answer).await, "8", "RESOURCE_EXHAUSTED");
    // Past their lifetime they are closed, and their places come back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("a reflection stream once the stalled ones expired")
        .into_inner();
    assert!(answers.message().await.expect("an answer").is_some());
    drop(stalled);

    // One health Watch at a time; Check is never capped.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let watch = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let _first = health.watch(watch.clone()).await.expect("the first watch");
    let refused = health.watch(watch.clone()).await.expect_err("a second watch");
    assert_status(&refused, tonic::Code::ResourceExhausted, "STREAMS_EXHAUSTED");
    health.check(watch).await.expect("Check is not capped");
}
