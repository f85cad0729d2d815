//! What one request can make calgate allocate (issue #25, item 1). prost
//! allocates every element of a repeated field before validation runs, so a
//! few megabytes of empty elements used to become hundreds of megabytes of
//! structs. Measured on the real binary, by its resident set.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use calgate::grpc::pb;
use prost::Message;
use tokio::net::TcpStream;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_types::StatusExt;

use crate::{
    support::*,
    support::{Binary, start_binary},
};

const MIB: u64 = 1024;

/// A BatchWriteEvents of `items` empty upserts (`items{upsert{event{}}}`,
/// six bytes each on the wire).
fn empty_batch(sub: &str, items: usize) -> pb::BatchWriteEventsRequest {
    let item = pb::BatchItem {
        operation: Some(pb::batch_item::Operation::Upsert(pb::BatchUpsert {
            event: Some(pb::Event::default()),
            ..Default::default()
        })),
    };
    pb::BatchWriteEventsRequest {
        mode: Default::default(),
        user: Some(pb::batch_write_events_request::User::Sub(sub.into())),
        items: vec![item; items],
    }
}

/// An UpsertEvent with `attendees` empty invitees (two bytes each).
fn empty_attendees(sub: &str, attendees: usize) -> pb::UpsertEventRequest {
    let mut event = event("evt-1");
    event.attendees = Some(pb::Attendees {
        invite: vec![pb::Attendee::default(); attendees],
        ..Default::default()
    });
    pb::UpsertEventRequest {
        mode: Default::default(),
        user: by_sub(sub),
        calendar_id: "cal".into(),
        event: Some(event),
    }
}

/// Sends bytes encoded beforehand, as an attacker would: the time measured
/// is calgate's, not the test's encoding.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// Calls `method` of calgate.v1 with `body` (encoded) as acme; the answer
/// and how long calgate took to give it.
async fn call_raw(channel: Channel, method: &str, body: Vec<u8>) -> (Result<(), Status>, Duration) {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    let path = format!("/calgate.v1.CalendarWriteService/{method}")
        .parse()
        .expect("path");
    let started = Instant::now();
    let answer = grpc.unary(with_key(ACME_KEY, body), path, RawCodec).await.map(drop);
    (answer, started.elapsed())
}

/// As [`call_raw`], expecting a refusal.
async fn send_raw(binary: &Binary, method: &str, body: Vec<u8>) -> (Status, Duration) {
    let (answer, took) = call_raw(binary.channel(), method, body).await;
    (answer.expect_err("refused"), took)
}

async fn send_batch(binary: &Binary, body: Vec<u8>) -> (Status, Duration) {
    send_raw(binary, "BatchWriteEvents", body).await
}

fn assert_names(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(status), [field], "{status:?}");
}

/// Waits for the resident set to settle back (the allocator returns freed
/// buffers in its own time); the last reading.
async fn settled_rss(binary: &Binary, idle_kib: u64) -> u64 {
    let mut rss = binary.rss_kib();
    for _ in 0..50 {
        if rss < idle_kib + 16 * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        rss = binary.rss_kib();
    }
    rss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_empty_elements_are_refused_before_they_cost_memory() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let mut binary = start_binary(&fake, &work).await;
    let grant = binary.connect("ada").await;
    let idle = binary.rss_kib();

    // One batch just under the 4 MiB message limit: about 690,000 empty items.
    let batch = empty_batch(&grant.sub, 690_000).encode_to_vec();
    assert!(batch.len() > 4_000_000, "{} bytes", batch.len());
    let (status, took) = send_batch(&binary, batch.clone()).await;
    assert_names(&status, "items");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let one_peak = binary.peak_rss_kib().saturating_sub(idle);
    assert!(one_peak < 64 * MIB, "one batch: peak RSS grew {one_peak} KiB");

    // Eight at once.
    let sends = (0..8).map(|_| send_batch(&binary, batch.clone()));
    for (status, _) in futures::future::join_all(sends).await {
        assert_names(&status, "items");
    }
    let eight_peak = binary.peak_rss_kib().saturating_sub(idle);
    assert!(eight_peak < 128 * MIB, "eight batches: peak RSS grew {eight_peak} KiB");

    // An UpsertEvent of two million empty attendees.
    let upsert = empty_attendees(&grant.sub, 2_000_000).encode_to_vec();
    assert!(upsert.len() > 4_000_000);
    let (status, took) = send_raw(&binary, "UpsertEvent", upsert).await;
    assert_names(&status, "event.attendees.invite");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let attendees_peak = binary.peak_rss_kib().saturating_sub(idle);
    assert!(
        attendees_peak < 128 * MIB,
        "attendees: peak RSS grew {attendees_peak} KiB"
    );

    let after = settled_rss(&binary, idle).await;
    assert!(
        after < idle + 16 * MIB,
        "RSS stayed at {after} KiB after the attack (idle {idle} KiB)"
    );
    // Still serving: a well-formed call works.
    Upsert::first_calendar(&fake, &grant.sub)
        .send(&binary.client)
        .await
        .expect("a normal write");
    binary.stop().await;
}

/// `message` encoded, padded with an unknown field (number 1000) of
/// `padding` bytes: a valid request that is large on the wire (prost skips
/// unknown fields without keeping them).
fn padded(message: &impl Message, padding: usize) -> Vec<u8> {
    let mut bytes = message.encode_to_vec();
    prost::encoding::encode_key(1000, prost::encoding::WireType::LengthDelimited, &mut bytes);
    prost::encoding::encode_varint(padding as u64, &mut bytes);
    bytes.resize(bytes.len() + padding, 0);
    bytes
}

/// Large messages share `grpc.max_decoding_bytes`; small ones never wait
/// for it, and a large one finding no room is refused at once.
#[tokio::test]
async fn large_requests_share_one_decoding_budget() {
    let app = spawn_app_edited(|s| s.grpc.max_decoding_bytes = 5 * 1024 * 1024).await;
    let grant = app.connect(Some("ada")).await;
    let calendar = app.fake.calendar_ids(&grant.sub)[0].clone();
    let upsert = || pb::UpsertEventRequest {
        mode: Default::default(),
        user: by_sub(&grant.sub),
        calendar_id: calendar.clone(),
        event: Some(event("evt-large")),
    };

    // A raw HTTP/2 stream announces a 4 MiB UpsertEvent and sends 1 KiB of it.
    let tcp = TcpStream::connect(app.addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!(
        "http://{}/calgate.v1.CalendarWriteService/UpsertEvent",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", format!("Bearer {ACME_KEY}"))
    .body(())
    .expect("request");
    let (_answer, mut stalled) = client.send_request(request, false).expect("send");
    let mut start = vec![0u8];
    start.extend_from_slice(&(4u32 * 1024 * 1024 - 16).to_be_bytes());
    start.resize(5 + 1024, 0);
    stalled.send_data(start.into(), false).expect("the first kilobyte");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another large request finds no room: refused at once, with RetryInfo.
    let (answer, took) = call_raw(app.channel.clone(), "UpsertEvent", padded(&upsert(), 2 * 1024 * 1024)).await;
    let status = answer.expect_err("no room");
    assert_status(&status, Code::ResourceExhausted, "DECODE_BUDGET_EXHAUSTED");
    assert!(status.get_error_details().retry_info().is_some());
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    // An ordinary call does not wait for the budget.
    Upsert::first_calendar(&app.fake, &grant.sub)
        .send(&app.client)
        .await
        .expect("a small write");

    // The stalled stream goes away and gives its room back.
    stalled.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (answer, _) = call_raw(app.channel.clone(), "UpsertEvent", padded(&upsert(), 2 * 1024 * 1024)).await;
    answer.expect("a large write once there is room");
    assert!(app.fake.event(&grant.sub, &calendar, "evt-large").is_some());
}

/// Bytes that are not protobuf are the caller's fault: INVALID_ARGUMENT
/// naming where they broke, never INTERNAL.
#[tokio::test]
async fn invalid_protobuf_is_a_bad_request() {
    let app = spawn_app().await;
    // items[0] claims five bytes it does not have.
    let (answer, _) = call_raw(app.channel.clone(), "BatchWriteEvents", vec![0x1a, 0x02, 0x0a, 0x05]).await;
    let status = answer.expect_err("refused");
    assert_names(&status, "items[0]");
    // A calendar id that is not UTF-8: well-formed wire, refused by prost.
    let (answer, _) = call_raw(app.channel.clone(), "UpsertEvent", vec![0x1a, 0x02, 0xff, 0xfe]).await;
    let status = answer.expect_err("refused");
    assert_names(&status, "request");
    assert!(status.message().contains("UTF-8"), "{}", status.message());
}

/// What Cronofy (or a broken proxy before it) answers is read only up to
/// `MAX_ANSWER_BYTES` (8 MiB): four 256 MiB answers at once cost a replica
/// about that each, and the calls fail with a clear status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_from_cronofy_is_cut_off_at_its_limit() {
    let fake = start_fake().await;
    let work = Workdir::new();
    let binary = start_binary(&fake, &work).await;
    let grant = binary.connect("ada").await;
    let idle = binary.rss_kib();
    assert_eq!(calgate::cronofy::MAX_ANSWER_BYTES, 8 * 1024 * 1024);
    fake.inject(fake_cronofy::Fault::huge_body(fake_cronofy::Endpoint::ListCalendars, 256 << 20).times(4));
    let calls = (0..4).map(|_| {
        let mut client = binary.client.clone();
        let sub = grant.sub.clone();
        async move {
            client
                .list_calendars(with_key(
                    ACME_KEY,
                    pb::ListCalendarsRequest {
                        user: Some(pb::list_calendars_request::User::Sub(sub)),
                    },
                ))
                .await
        }
    });
    for answer in futures::future::join_all(calls).await {
        let status = answer.expect_err("cut off");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("unexpected answer"), "{status:?}");
    }
    let peak = binary.peak_rss_kib().saturating_sub(idle);
    assert!(peak < 80 * MIB, "four endless answers: peak RSS grew {peak} KiB");
    let calendars = fake.calendar_ids(&grant.sub);
    assert!(!calendars.is_empty(), "the fake is fine");
}
