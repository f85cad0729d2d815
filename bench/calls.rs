//! The UpsertEvent every scenario sends.

use std::time::Duration;

use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use time::OffsetDateTime;
use tonic::{Code, Request, transport::Channel};

use crate::{grants::Seeded, harness::API_KEY};

/// An UpsertEvent for `user_ref`: a 30-minute event tomorrow on the hour.
pub(crate) fn upsert_request(user_ref: &str, calendar_id: &str, event_id: String) -> pb::UpsertEventRequest {
    let start = OffsetDateTime::now_utc().unix_timestamp() / 3600 * 3600 + 86_400;
    let at = |seconds| pb::EventTime {
        value: Some(pb::event_time::Value::Time(prost_types::Timestamp {
            seconds,
            nanos: 0,
        })),
        tzid: None,
    };
    pb::UpsertEventRequest {
        mode: Default::default(),
        user: Some(pb::upsert_event_request::User::UserRef(user_ref.to_owned())),
        calendar_id: calendar_id.to_owned(),
        event: Some(pb::Event {
            event_id,
            summary: "Benchmark".into(),
            start: Some(at(start)),
            end: Some(at(start + 1800)),
            ..Default::default()
        }),
    }
}

/// One UpsertEvent for `grant`, with a 60 s deadline as a patient caller would set.
pub(crate) async fn upsert(channel: Channel, grant: &Seeded) -> Result<(), Code> {
    let mut client = CalendarWriteServiceClient::new(channel);
    let event_id = format!("expiry-{}", rand::random::<u32>());
    let mut request = Request::new(upsert_request(&grant.user_ref, &grant.calendar_id, event_id));
    request.set_timeout(Duration::from_secs(60));
    let bearer = format!("Bearer {API_KEY}").parse().map_err(|_| Code::Internal)?;
    request.metadata_mut().insert("authorization", bearer);
    client
        .upsert_event(request)
        .await
        .map(drop)
        .map_err(|status| status.code())
}
