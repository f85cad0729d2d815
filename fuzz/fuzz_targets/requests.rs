//! Request conversion and validation from arbitrary protobuf bytes: never a
//! panic, and a refusal is INVALID_ARGUMENT with a small, bounded answer.
#![no_main]

use calgate::{domain::Error, grpc::convert, grpc::pb};
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

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
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
