//! QueryAvailability: several users, the tenant's client secret, Cronofy's answer.

use calgate::grpc::pb;
use fake_cronofy::{Endpoint, NextAuthorization};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::*;

const NINE: i64 = 1_796_115_600; // 2026-12-01T09:00:00Z

fn by_ref(user_ref: &str) -> pb::GrantRef {
    pb::GrantRef {
        user: Some(pb::grant_ref::User::UserRef(user_ref.into())),
        ..Default::default()
    }
}

fn query(
    members: Vec<pb::GrantRef>,
    required: Option<pb::participant_group::Required>,
    minutes: u32,
) -> pb::QueryAvailabilityRequest {
    pb::QueryAvailabilityRequest {
        participants: vec![pb::ParticipantGroup { members, required }],
        required_duration_minutes: minutes,
        query_periods: vec![pb::TimePeriod {
            start: Some(prost_types::Timestamp {
                seconds: NINE,
                nanos: 0,
            }),
            end: Some(prost_types::Timestamp {
                seconds: NINE + 3 * 3600,
                nanos: 0,
            }),
        }],
        buffer: None,
    }
}

/// (minutes after nine of start, of end, number of subs) for each period.
fn shape(periods: &[pb::AvailablePeriod]) -> Vec<(i64, i64, usize)> {
    periods
        .iter()
        .map(|p| {
            let minutes = |t: &Option<prost_types::Timestamp>| (t.as_ref().map_or(0, |t| t.seconds) - NINE) / 60;
            (minutes(&p.start), minutes(&p.end), p.subs.len())
        })
        .collect()
}

#[tokio::test]
async fn availability_combines_users_busy_time_as_required() {
    let app = spawn_app().await;
    let ada = app.connect(Some("ada")).await;
    let grace = app.connect(Some("grace")).await;
    let ada_cal = app.fake.calendar_ids(&ada.sub)[0].clone();
    let grace_cal = app.fake.calendar_ids(&grace.sub)[0].clone();
    app.fake.add_busy_period(
        &ada.sub,
        &ada_cal,
        "2026-12-01T09:30:00Z",
        "2026-12-01T10:00:00Z",
        "busy",
    );
    app.fake.add_busy_period(
        &grace.sub,
        &grace_cal,
        "2026-12-01T11:00:00Z",
        "2026-12-01T11:30:00Z",
        "busy",
    );
    let members = || vec![by_ref("ada"), by_ref("grace")];

    let all = app
        .client
        .clone()
        .query_availability(app.req(query(members(), None, 30)))
        .await
        .expect("all")
        .into_inner()
        .available_periods;
    assert_eq!(shape(&all), [(0, 30, 2), (60, 120, 2), (150, 180, 2)]);
    let mut subs = all[1].subs.clone();
    subs.sort();
    let mut expected = vec![ada.sub.clone(), grace.sub.clone()];
    expected.sort();
    assert_eq!(subs, expected);

    let hour = app
        .client
        .clone()
        .query_availability(app.req(query(members(), Some(pb::participant_group::Required::All(true)), 60)))
        .await
        .expect("an hour")
        .into_inner()
        .available_periods;
    assert_eq!(shape(&hour), [(60, 120, 2)]);

    let anyone = app
        .client
        .clone()
        .query_availability(app.req(query(members(), Some(pb::participant_group::Required::Count(1)), 30)))
        .await
        .expect("one of them")
        .into_inner()
        .available_periods;
    assert_eq!(
        shape(&anyone),
        [(0, 30, 2), (30, 60, 1), (60, 120, 2), (120, 150, 1), (150, 180, 2)]
    );
    // The fake accepts only the tenant's client secret here, never a user's token.
    assert_eq!(app.fake.count(Endpoint::Availability), 3);
}

#[tokio::test]
async fn another_tenants_user_is_not_found_and_nothing_is_sent() {
    let app = spawn_app().await;
    app.connect(Some("ada")).await;
    app.connect_as(GLOBEX_KEY, GLOBEX_REDIRECT, Some("globex-user"))
        .await
        .expect("globex user");
    let status = app
        .client
        .clone()
        .query_availability(app.req(query(vec![by_ref("ada"), by_ref("globex-user")], None, 30)))
        .await
        .expect_err("cross-tenant member");
    assert_status(&status, Code::NotFound, "GRANT_NOT_FOUND");
    assert_eq!(app.fake.count(Endpoint::Availability), 0);
}

#[tokio::test]
async fn bad_queries_name_their_fields() {
    let app = spawn_app().await;
    let mut bad = query(
        vec![by_ref("ada"), pb::GrantRef::default()],
        Some(pb::participant_group::Required::Count(3)),
        0,
    );
    bad.query_periods[0].end = Some(prost_types::Timestamp {
        seconds: NINE - 60,
        nanos: 0,
    });
    bad.buffer = Some(pb::AvailabilityBuffer {
        before_minutes: 5000,
        after_minutes: 0,
    });
    let status = app
        .client
        .clone()
        .query_availability(app.req(bad))
        .await
        .expect_err("invalid");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(
        violated_fields(&status),
        [
            "participants[0].members[1]",
            "participants[0].count",
            "required_duration_minutes",
            "query_periods[0].end",
            "buffer.before_minutes"
        ]
    );
    let empty = pb::QueryAvailabilityRequest::default();
    let status = app
        .client
        .clone()
        .query_availability(app.req(empty))
        .await
        .expect_err("empty");
    assert_eq!(
        violated_fields(&status),
        ["participants", "required_duration_minutes", "query_periods"]
    );
}

/// A No-Access user's calendar is unknown to Cronofy beyond the events the
/// application wrote (docs: access-modes/no-access): asking for their
/// availability or free/busy would call unknown time free. Both RPCs refuse
/// them by name, before any call to Cronofy.
#[tokio::test]
async fn a_no_access_user_is_refused_by_name_not_called_free() {
    let app = spawn_app().await;
    app.connect(Some("ada")).await;
    app.fake.set_next_authorization(NextAuthorization {
        provider_name: Some("cronofy".into()),
        ..Default::default()
    });
    let nora = app.connect(Some("nora")).await;
    assert_eq!(nora.access_mode, pb::AccessMode::NoAccess as i32);

    let status = app
        .client
        .clone()
        .query_availability(app.req(query(vec![by_ref("ada"), by_ref("nora")], None, 30)))
        .await
        .expect_err("nora's availability is unknown");
    assert_status(&status, Code::FailedPrecondition, "AVAILABILITY_UNKNOWN");
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure");
    let subjects: Vec<&str> = failure.violations.iter().map(|v| v.subject.as_str()).collect();
    assert_eq!(subjects, ["participants[0].members[1]"]);
    assert!(failure.violations[0].description.contains("No-Access"));
    assert_eq!(app.fake.count(Endpoint::Availability), 0, "Cronofy was not asked");

    let status = app
        .client
        .clone()
        .read_free_busy(app.req(pb::ReadFreeBusyRequest {
            user: Some(pb::read_free_busy_request::User::UserRef("nora".into())),
            tzid: "Europe/London".into(),
            ..Default::default()
        }))
        .await
        .expect_err("nora's free/busy is unknown");
    assert_status(&status, Code::FailedPrecondition, "AVAILABILITY_UNKNOWN");
    let failure = status.get_details_precondition_failure().expect("PreconditionFailure");
    assert_eq!(failure.violations[0].subject, "user_ref");
    assert_eq!(app.fake.count(Endpoint::FreeBusy), 0, "Cronofy was not asked");
}

/// Managed availability (docs: scheduling/managed-availability) says when a
/// No-Access user is free: asked for, the user is no longer refused, and the
/// member goes to Cronofy with `managed_availability` and its rule ids.
#[tokio::test]
async fn managed_availability_makes_a_no_access_user_known() {
    let app = spawn_app().await;
    app.connect(Some("ada")).await;
    app.fake.set_next_authorization(NextAuthorization {
        provider_name: Some("cronofy".into()),
        ..Default::default()
    });
    app.connect(Some("nora")).await;
    let managed = |rule_ids: Vec<String>| pb::GrantRef {
        managed_availability: true,
        availability_rule_ids: rule_ids,
        ..by_ref("nora")
    };

    app.client
        .clone()
        .query_availability(app.req(query(
            vec![by_ref("ada"), managed(vec!["office-hours".into()])],
            None,
            30,
        )))
        .await
        .expect("nora's managed availability is known");
    let sent = app
        .fake
        .requests()
        .into_iter()
        .rfind(|r| r.endpoint == Endpoint::Availability)
        .expect("an availability query");
    let body: serde_json::Value = serde_json::from_str(&sent.body).expect("JSON");
    let members = &body["participants"][0]["members"];
    assert_eq!(members[0].get("managed_availability"), None, "only where asked");
    assert_eq!(members[1]["managed_availability"], true);
    assert_eq!(members[1]["availability_rule_ids"], serde_json::json!(["office-hours"]));

    let status = app
        .client
        .clone()
        .query_availability(app.req(query(
            vec![
                pb::GrantRef {
                    availability_rule_ids: vec!["office-hours".into()],
                    ..by_ref("ada")
                },
                managed(vec!["x".repeat(65)]),
            ],
            None,
            30,
        )))
        .await
        .expect_err("bad rule ids");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        [
            "participants[0].members[0].availability_rule_ids",
            "participants[0].members[1].availability_rule_ids[0]"
        ]
    );
}
