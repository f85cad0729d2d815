//! `POST /v1/availability` request and answer shapes (cronofy-api §7).

use serde::{Deserialize, Serialize};

/// The query, as Cronofy takes it.
#[derive(Debug, Clone, Serialize)]
pub struct AvailabilityQuery {
    /// Groups of participants.
    pub participants: Vec<ParticipantGroup>,
    /// Length sought.
    pub required_duration: Minutes,
    /// Where to look.
    pub query_periods: Vec<Period>,
    /// Free time around each period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<Buffer>,
}

/// Members and how many must be free.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantGroup {
    /// The members, by sub.
    pub members: Vec<Member>,
    /// `"all"` or a count.
    pub required: Required,
}

/// How many members of a group must be free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Required {
    /// Sent as `"all"`.
    All(AllMarker),
    /// Sent as a number.
    Count(u32),
}

/// Serialises as the string `"all"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllMarker;

impl Serialize for AllMarker {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("all")
    }
}

/// One member.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Cronofy's sub.
    pub sub: String,
    /// Use the member's managed availability (availability rules and
    /// available periods) [docs: /developers/scheduling/managed-availability].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub managed_availability: bool,
    /// With managed availability: only these availability rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub availability_rule_ids: Vec<String>,
}

/// A duration in minutes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Minutes {
    /// Minutes.
    pub minutes: u32,
}

/// A period in Cronofy's UTC Time form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Period {
    /// `2026-12-01T09:00:00Z`.
    pub start: String,
    /// Same form.
    pub end: String,
}

/// Free time before and after.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Buffer {
    /// Before.
    pub before: Minutes,
    /// After.
    pub after: Minutes,
}

/// One available period in Cronofy's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct AvailablePeriod {
    /// Start.
    pub start: String,
    /// End.
    pub end: String,
    /// Who is free throughout.
    #[serde(default)]
    pub participants: Vec<Participant>,
}

/// A participant of an available period.
#[derive(Debug, Clone, Deserialize)]
pub struct Participant {
    /// Cronofy's sub.
    pub sub: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct AvailabilityResponse {
    #[serde(default)]
    pub(super) available_periods: Vec<AvailablePeriod>,
}
