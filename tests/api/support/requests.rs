//! Requests the tests send (an UpsertEvent builder, enterprise members,
//! events), and what they assert about answers (statuses, health, grants,
//! the change stream).

use std::time::Duration;

use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use fake_cronofy::FakeCronofy;
use tonic::{Code, Request, Status, Streaming, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_types::StatusExt;

use super::app::*;

pub fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().expect("metadata"));
    request
}

/// One UpsertEvent as the tests send it: `event(event_id)` (default
/// `evt-1`) for a user on a calendar, as acme, with an optional deadline. The
/// one place such a request is built.
pub struct Upsert {
    user: Option<pb::upsert_event_request::User>,
    calendar_id: String,
    event_id: String,
    timeout: Option<String>,
}

impl Upsert {
    /// `event("evt-1")` for `user` on `calendar_id`.
    pub fn new(user: Option<pb::upsert_event_request::User>, calendar_id: impl Into<String>) -> Upsert {
        Upsert {
            user,
            calendar_id: calendar_id.into(),
            event_id: "evt-1".into(),
            timeout: None,
        }
    }

    /// For the grant `sub`, on its first calendar at the fake.
    pub fn first_calendar(fake: &FakeCronofy, sub: &str) -> Upsert {
        Upsert::new(by_sub(sub), fake.calendar_ids(sub)[0].clone())
    }

    /// Another event id.
    pub fn event_id(mut self, event_id: &str) -> Upsert {
        self.event_id = event_id.into();
        self
    }

    /// A `grpc-timeout` (e.g. `300m`), when given.
    pub fn timeout(mut self, timeout: Option<&str>) -> Upsert {
        self.timeout = timeout.map(str::to_owned);
        self
    }

    /// The request, with acme's key.
    pub fn request(&self) -> Request<pb::UpsertEventRequest> {
        let mut request = with_key(
            ACME_KEY,
            pb::UpsertEventRequest {
                mode: Default::default(),
                user: self.user.clone(),
                calendar_id: self.calendar_id.clone(),
                event: Some(event(&self.event_id)),
            },
        );
        if let Some(timeout) = &self.timeout {
            request
                .metadata_mut()
                .insert("grpc-timeout", timeout.parse().expect("grpc-timeout"));
        }
        request
    }

    /// Sends it.
    pub async fn send(&self, client: &CalendarWriteServiceClient<Channel>) -> Result<(), Status> {
        client.clone().upsert_event(self.request()).await.map(drop)
    }
}

/// AuthorizeEnterpriseUser for `email` as `user_ref`, through the service
/// account bound to `org_ref`, with the default scope.
pub fn member_request(org_ref: &str, email: &str, user_ref: &str) -> pb::AuthorizeEnterpriseUserRequest {
    pb::AuthorizeEnterpriseUserRequest {
        service_account: Some(pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef(org_ref.into())),
        email: email.into(),
        user_ref: user_ref.into(),
        scope: vec![],
    }
}

pub fn by_sub(sub: &str) -> Option<pb::upsert_event_request::User> {
    Some(pb::upsert_event_request::User::Sub(sub.into()))
}

/// A valid one-hour event.
pub fn event(event_id: &str) -> pb::Event {
    pb::Event {
        event_id: event_id.into(),
        summary: "Design review".into(),
        start: Some(at(1_780_000_000)),
        end: Some(at(1_780_003_600)),
        ..Default::default()
    }
}

pub fn at(seconds: i64) -> pb::EventTime {
    pb::EventTime {
        value: Some(pb::event_time::Value::Time(prost_types::Timestamp {
            seconds,
            nanos: 0,
        })),
        tzid: None,
    }
}

/// Asserts a status's code and ErrorInfo reason (domain calgate).
#[track_caller]
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "calgate");
}

/// A caller whose deadline passed has given up: it heard calgate's
/// DEADLINE_EXCEEDED or, on a loaded machine, its own gRPC stack's timer first
/// (tonic: CANCELLED "Timeout expired"). For tests whose point is what happens
/// after the caller left; `upstream::the_callers_deadline_is_respected` asserts
/// DEADLINE_EXCEEDED itself.
#[track_caller]
pub fn assert_gave_up(status: &Status) {
    let gave_up = status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message() == "Timeout expired");
    assert!(gave_up, "{status:?}");
}

/// The BadRequest field paths of an INVALID_ARGUMENT status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The health status of `service` (`""` for the server) over `channel`, within 2 s.
pub async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, Status> {
    let mut request = Request::new(HealthCheckRequest {
        service: service.into(),
    });
    request.set_timeout(Duration::from_secs(2));
    let status = HealthClient::new(channel.clone())
        .check(request)
        .await?
        .into_inner()
        .status;
    Ok(ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown))
}

/// Polls `service`'s health until it is `want`; false after `within`.
pub async fn health_becomes(channel: &Channel, service: &str, want: ServingStatus, within: Duration) -> bool {
    let give_up = tokio::time::Instant::now() + within;
    loop {
        if health(channel, service).await.ok() == Some(want) {
            return true;
        }
        if tokio::time::Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GetGrant by sub with `key`'s tenant.
pub async fn fetch_grant(
    client: &CalendarWriteServiceClient<Channel>,
    key: &str,
    sub: &str,
) -> Result<pb::Grant, Status> {
    let request = with_key(
        key,
        pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::Sub(sub.into())),
        },
    );
    Ok(client
        .clone()
        .get_grant(request)
        .await?
        .into_inner()
        .grant
        .expect("grant"))
}

/// Longest a test waits for a change it knows is coming (a bound on a hang,
/// not a measure of speed: latency is in docs/benchmarks.md).
pub const ARRIVAL: Duration = Duration::from_secs(20);

/// WatchChanges as `key`'s tenant, after the cursor `after` (empty: from now on).
pub async fn watch(
    client: &CalendarWriteServiceClient<Channel>,
    key: &str,
    after: &str,
) -> Result<Streaming<pb::Change>, Status> {
    client
        .clone()
        .watch_changes(with_key(key, pb::WatchChangesRequest { after: after.into() }))
        .await
        .map(tonic::Response::into_inner)
}

/// The next change on the stream, failing the test if none comes.
pub async fn next(stream: &mut Streaming<pb::Change>) -> pb::Change {
    tokio::time::timeout(ARRIVAL, stream.message())
        .await
        .expect("a change arrives")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// RevokeGrant of the grant bound to `user_ref`.
pub fn revoke_by_ref(user_ref: &str) -> pb::RevokeGrantRequest {
    pb::RevokeGrantRequest {
        user: Some(pb::revoke_grant_request::User::UserRef(user_ref.into())),
        profile_id: None,
    }
}
