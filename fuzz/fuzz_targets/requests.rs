//! Request conversion and validation from arbitrary protobuf bytes: never a
//! panic, and a refusal is INVALID_ARGUMENT with a small, bounded answer.
//! The wire pre-scan runs first, as in the server: it never panics, and what
//! it lets through decodes within the caps it enforces.
#![no_main]

use calgate::{
    domain::Error,
    grpc::{convert, pb, wire_scan::SHAPES},
};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The answer a refusal would get: bounded in violations and size.
fn check(result: Result<impl Sized, Error>) {
    if let Err(error) = result {
        if let Error::InvalidArgument(violations) = &error {
            assert!(violations.listed.len() <= calgate::domain::MAX_FIELD_VIOLATIONS);
        }
        let status = tonic::Status::from(error);
        assert!(
            status.details().len() < 16 * 1024,
            "details of {} bytes",
            status.details().len()
        );
        assert!(
            status.message().len() < 1024,
            "message of {} bytes",
            status.message().len()
        );
    }
}

/// What the pre-scan let through holds no more elements than its caps.
fn within_caps(request: &pb::UpsertEventRequest) {
    use calgate::domain::event::limits;
    if let Some(event) = &request.event {
        assert!(event.reminders.len() <= limits::REMINDERS);
        assert!(event.attachment_ids.len() <= limits::SMALL_LIST);
        if let Some(attendees) = &event.attendees {
            assert!(attendees.invite.len() <= limits::ATTENDEES);
            assert!(attendees.remove.len() <= limits::ATTENDEES);
        }
        if let Some(recurrence) = &event.recurrence {
            assert!(recurrence.rules.len() <= limits::SMALL_LIST);
            assert!(recurrence.rules.iter().all(|rule| rule.by_day.len() <= limits::WEEKDAYS));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let name = |message: &str| format!("calgate.v1.{message}");
    if kind % 8 == 0 && SHAPES.check(&name("UpsertEventRequest"), bytes).is_ok() {
        if let Ok(request) = pb::UpsertEventRequest::decode(bytes) {
            within_caps(&request);
        }
    }
    if kind % 8 == 1 && SHAPES.check(&name("BatchWriteEventsRequest"), bytes).is_ok() {
        if let Ok(request) = pb::BatchWriteEventsRequest::decode(bytes) {
            assert!(request.items.len() <= calgate::domain::MAX_BATCH_ITEMS);
        }
    }
    match kind % 8 {
        0 => {
            if let Ok(request) = pb::UpsertEventRequest::decode(bytes) {
                check(convert::upsert_request(&request));
            }
        }
        1 => {
            if let Ok(request) = pb::BatchWriteEventsRequest::decode(bytes) {
                check(convert::batch_request(&request));
            }
        }
        2 => {
            if let Ok(request) = pb::ExchangeCodeRequest::decode(bytes) {
                check(convert::exchange_request(request));
            }
        }
        3 => {
            if let Ok(request) = pb::BuildAuthorizeUrlRequest::decode(bytes) {
                check(convert::authorize_request(request));
            }
        }
        4 => {
            if let Ok(request) = pb::ReadFreeBusyRequest::decode(bytes) {
                check(convert::free_busy_request(&request));
            }
        }
        5 => {
            if let Ok(request) = pb::QueryAvailabilityRequest::decode(bytes) {
                check(convert::availability_request(&request));
            }
        }
        6 => {
            if let Ok(request) = pb::AuthorizeEnterpriseUserRequest::decode(bytes) {
                check(convert::enterprise_user_request(&request));
            }
        }
        _ => {
            if let Ok(request) = pb::DeleteEventRequest::decode(bytes) {
                check(convert::delete_request(&request));
            }
        }
    }
});
