//! Hostile input: requests built to exhaust memory or make huge answers are
//! refused cheaply, with small statuses (issue: survive hostile input).

use prost::Message;
use tonic::Code;
use tonic_types::StatusExt;

use calgate::grpc::pb;

use crate::{helpers::*, process::start_binary};

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
