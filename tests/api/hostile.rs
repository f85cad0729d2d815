//! Hostile input: requests built to exhaust memory or make huge answers are
//! refused cheaply, with small statuses (issue: survive hostile input).

use std::time::Duration;

use prost::Message;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Code;
use tonic_types::StatusExt;

use calgate::{config::CallbackLimits, grpc::pb};
use fake_cronofy::{Endpoint, Fault};

use crate::{support::start_binary, support::*};

/// About 1 MiB of over-long lists in one UpsertEvent: each list is reported
/// once, the answer lists at most 50 violations, and memory stays flat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_lists_are_refused_once_each_with_a_small_answer() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;
    let grant = binary.connect("ada").await;
    let calendar = fake.calendar_ids(&grant.sub)[0].clone();

    let mut hostile = event("evt-hostile");
    hostile.reminders = vec![pb::Reminder { minutes: -1 }; 100_000];
    hostile.attachment_ids = vec![String::new(); 50_000];
    hostile.recurrence = Some(pb::Recurrence {
        rules: vec![
            pb::RecurrenceRule {
                frequency: pb::RecurrenceFrequency::Weekly as i32,
                interval: 1,
                by_day: vec![99; 200_000],
            };
            2
        ],
    });
    hostile.subscriptions = vec![
        pb::Subscription {
            uri: "not a url".into(),
            interaction_types: vec!["NOT VALID".into(); 10_000],
        };
        5
    ];
    let request = pb::UpsertEventRequest {
        mode: Default::default(),
        user: by_sub(&grant.sub),
        calendar_id: calendar,
        event: Some(hostile),
    };
    let size = request.encoded_len();
    assert!(size > 1_000_000, "a request of {size} bytes");

    let before = binary.peak_rss_kib();
    let mut call = with_key(ACME_KEY, request);
    call.metadata_mut()
        .insert("grpc-timeout", "5S".parse().expect("header"));
    let status = binary.client.clone().upsert_event(call).await.expect_err("refused");
    let grown_kib = binary.peak_rss_kib().saturating_sub(before);

    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    let fields = violated_fields(&status);
    assert!(fields.len() <= 50, "{} violations listed", fields.len());
    for whole_list in [
        "event.reminders",
        "event.attachment_ids",
        "event.recurrence.rules[0].by_day",
        "event.recurrence.rules[1].by_day",
        "event.subscriptions[0].interaction_types",
    ] {
        assert_eq!(
            fields.iter().filter(|f| f.as_str() == whole_list).count(),
            1,
            "{whole_list} reported once in {fields:?}"
        );
    }
    assert!(
        !fields.iter().any(|f| f.starts_with("event.reminders[")),
        "an over-long list is not walked: {fields:?}"
    );
    assert!(
        status.details().len() < 8 * 1024,
        "details of {} bytes",
        status.details().len()
    );
    assert!(
        status.message().len() < 1024,
        "message of {} bytes",
        status.message().len()
    );
    assert!(status.get_error_details().bad_request().is_some());
    assert!(grown_kib < 64 * 1024, "peak RSS grew by {grown_kib} KiB");
    assert_eq!(fake.event_count(&grant.sub), 0, "nothing reached Cronofy");
    binary.stop().await;
}

/// Many bad items, each within its list's limit: the answer lists 50 and says
/// how many more there were.
#[tokio::test]
async fn an_answer_lists_at_most_fifty_violations_and_counts_the_rest() {
    let app = spawn_app().await;
    let grant = app.connect(Some("ada")).await;
    let items: Vec<pb::BatchItem> = (0..50)
        .map(|_| pb::BatchItem {
            operation: Some(pb::batch_item::Operation::Upsert(pb::BatchUpsert {
                calendar_id: String::new(),
                event: Some(pb::Event {
                    attendees: Some(pb::Attendees {
                        invite: vec![
                            pb::Attendee {
                                email: "not-an-email".into(),
                                display_name: None,
                            };
                            3
                        ],
                        remove: vec![],
                    }),
                    ..Default::default()
                }),
            })),
        })
        .collect();
    let status = app
        .client
        .clone()
        .batch_write_events(app.req(pb::BatchWriteEventsRequest {
            mode: Default::default(),
            user: Some(pb::batch_write_events_request::User::Sub(grant.sub.clone())),
            items,
        }))
        .await
        .expect_err("every item is bad");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status).len(), 50);
    assert!(
        status.message().contains("more)"),
        "the message counts what is not listed: {}",
        status.message()
    );
}

/// calgate with callbacks whose listener limits are small enough to test.
async fn spawn_with_tight_callbacks(limits: CallbackLimits) -> (TestApp, std::net::SocketAddr) {
    let (app, base) = spawn_app_with_callbacks(move |s| {
        if let Some(callbacks) = &mut s.callbacks {
            callbacks.limits = limits;
        }
    })
    .await;
    let addr = base.trim_start_matches("http://").parse().expect("callback address");
    (app, addr)
}

/// Waits until the server closes `stream` (EOF or reset); false after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an error answer before closing is fine
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

#[tokio::test]
async fn the_callback_listener_closes_connections_that_never_finish_their_head() {
    let (_app, addr) = spawn_with_tight_callbacks(CallbackLimits {
        header_timeout: Duration::from_secs(1),
        ..CallbackLimits::default()
    })
    .await;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut partial = TcpStream::connect(addr).await.expect("connect");
    partial
        .write_all(b"POST /cronofy/enterprise-connect/callback HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head");
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)).await,
        "a silent connection is closed"
    );
    assert!(
        closed_within(&mut partial, Duration::from_secs(10)).await,
        "half a head is closed"
    );
}

#[tokio::test]
async fn callback_bodies_are_bounded_in_size_and_time() {
    let (_app, addr) = spawn_with_tight_callbacks(CallbackLimits {
        body_timeout: Duration::from_secs(1),
        ..CallbackLimits::default()
    })
    .await;
    let id = "0123456789abcdef0123456789abcdef";
    let huge = vec![b'x'; 65 * 1024];
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /cronofy/enterprise-connect/callback?authorization={id} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let _ = stream.write_all(&huge).await;
    assert_eq!(status_line(&mut stream).await, "413");

    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /cronofy/enterprise-connect/callback?authorization={id} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"auth"
    );
    slow.write_all(head.as_bytes()).await.expect("head");
    assert_eq!(status_line(&mut slow).await, "408", "a body that never arrives");
}

/// The status code of the HTTP answer on `stream`.
async fn status_line(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    let read = async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer");
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_callback_listener_holds_at_most_max_connections() {
    let (_app, addr) = spawn_with_tight_callbacks(CallbackLimits {
        max_connections: 2,
        max_waiting: 2,
        max_waiting_per_peer: 2,
        header_timeout: Duration::from_secs(30),
        ..CallbackLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"POST / HTTP/1.1\r\n").await.expect("half a head");
        held.push(stream);
        // Accepted in arrival order.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A third closes the oldest connection still waiting for its head, not itself.
    let mut third = TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut held[0], Duration::from_secs(5)).await,
        "the oldest waiting connection makes room"
    );
    assert!(
        !closed_within(&mut held[1], Duration::from_millis(200)).await,
        "the others stay (their head timeout is 30 s)"
    );
    third
        .write_all(b"POST /cronofy/enterprise-connect/callback HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await
        .expect("a whole request");
    assert_eq!(status_line(&mut third).await, "404", "the newcomer is served");
}

/// The gRPC port advertises SETTINGS_MAX_CONCURRENT_STREAMS (unlimited before).
#[tokio::test]
async fn the_grpc_port_limits_concurrent_streams() {
    let app = spawn_app_edited(|s| s.grpc.max_concurrent_streams = 7).await;
    let tcp = TcpStream::connect(app.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    // One round trip: by its answer the server's SETTINGS have been applied.
    let request = http::Request::post(format!("http://{}/grpc.health.v1.Health/Check", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("send");
    body.send_data(axum::body::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("empty HealthCheckRequest");
    response.await.expect("answer");
    assert_eq!(client.current_max_send_streams(), 7);
}

/// One tenant's calls in flight are bounded; other tenants are still served.
#[tokio::test]
async fn one_tenant_cannot_take_every_place() {
    let app = spawn_app_edited(|s| s.grpc.tenant_calls_in_flight = 2).await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    app.fake
        .inject(Fault::delay(Endpoint::UpsertEvent, Duration::from_secs(2)).times(2));
    let slow = |event_id: &str| {
        let client = app.client.clone();
        let upsert = Upsert::new(by_sub(&grant.sub), calendar.clone()).event_id(event_id);
        tokio::spawn(async move { upsert.send(&client).await })
    };
    let first = slow("evt-1");
    let second = slow("evt-2");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.fake.count(Endpoint::UpsertEvent) < 2 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the two calls never reached Cronofy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = app
        .client
        .clone()
        .get_grant(app.req(pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::Sub(grant.sub.clone())),
        }))
        .await
        .expect_err("acme's places are taken");
    assert_status(&status, Code::ResourceExhausted, "TENANT_CONCURRENCY_EXHAUSTED");
    assert!(status.get_error_details().retry_info().is_some());
    // The place is taken from the headers, before the body is decoded: an
    // over-long request is refused for want of a place, not read.
    let over_long = pb::BatchWriteEventsRequest {
        mode: Default::default(),
        user: Some(pb::batch_write_events_request::User::Sub(grant.sub.clone())),
        items: vec![pb::BatchItem::default(); 10_000],
    };
    let status = app
        .client
        .clone()
        .batch_write_events(app.req(over_long))
        .await
        .expect_err("no place");
    assert_status(&status, Code::ResourceExhausted, "TENANT_CONCURRENCY_EXHAUSTED");
    let other = fetch_grant(&app.client, GLOBEX_KEY, &grant.sub)
        .await
        .expect_err("globex is served: not its grant");
    assert_status(&other, Code::NotFound, "GRANT_NOT_FOUND");
    first.await.expect("task").expect("first");
    second.await.expect("task").expect("second");
    fetch_grant(&app.client, ACME_KEY, &grant.sub)
        .await
        .expect("places are given back");
}

/// A hostile or broken Retry-After (u64::MAX seconds) is clamped before any
/// clock arithmetic: no panic, no retry past the ceiling, and the caller is
/// told a bounded delay (at most an hour).
#[tokio::test]
async fn an_absurd_retry_after_is_clamped() {
    let app = spawn_app().await;
    let grant = app.connect(None).await;
    app.fake
        .inject(Fault::status(Endpoint::UpsertEvent, 429).retry_after("18446744073709551615"));
    let status = Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect_err("rate limited");
    assert_status(&status, Code::ResourceExhausted, "UPSTREAM_RATE_LIMITED");
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo");
    assert_eq!(delay, Duration::from_secs(3600), "Cronofy's wait, at most an hour");
    assert_eq!(
        app.fake.count(Endpoint::UpsertEvent),
        1,
        "no retry: the wait exceeds the retry ceiling"
    );
    // The server survived it.
    fetch_grant(&app.client, ACME_KEY, &grant.sub)
        .await
        .expect("still serving");
}
