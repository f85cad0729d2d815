//! Availability across several users, through the tenant's Cronofy application.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Deadline, EventService};
use crate::{
    cronofy::availability::{self as wire, AllMarker, Member, Minutes, Period, Required},
    domain::reads::AvailablePeriod,
    domain::{Error, Tenant, error::UnknownAvailability, grant::GrantSelector, refresh::usable_tokens, upstream},
};

/// One group: members and how many must be free (None: all).
#[derive(Debug, Clone)]
pub struct AvailabilityGroup {
    /// The members.
    pub members: Vec<AvailabilityMember>,
    /// At least this many free; None means all.
    pub required: Option<u32>,
}

/// One member of a group: who, and whether Cronofy's managed availability
/// (availability rules, available periods) says when they are free.
#[derive(Debug, Clone)]
pub struct AvailabilityMember {
    /// Which grant.
    pub selector: GrantSelector,
    /// Use the member's managed availability.
    pub managed: bool,
    /// With `managed`: only these availability rules (empty: all).
    pub rule_ids: Vec<String>,
}

/// A checked QueryAvailability request.
#[derive(Debug, Clone)]
pub struct AvailabilityRequest {
    /// The groups.
    pub groups: Vec<AvailabilityGroup>,
    /// Minutes sought.
    pub duration_minutes: u32,
    /// Where to look.
    pub periods: Vec<(OffsetDateTime, OffsetDateTime)>,
    /// Minutes free before and after, if asked.
    pub buffer: Option<(u32, u32)>,
}

fn utc(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

impl EventService {
    /// Finds available periods. Every member must be a grant of this tenant
    /// that calgate can act on; none of them is resolved for another tenant.
    pub async fn query_availability(
        &self,
        tenant: &Tenant,
        request: &AvailabilityRequest,
        deadline: Deadline,
    ) -> Result<Vec<AvailablePeriod>, Error> {
        let mut participants = Vec::with_capacity(request.groups.len());
        let mut unknown = Vec::new();
        for (g, group) in request.groups.iter().enumerate() {
            let mut members = Vec::with_capacity(group.members.len());
            for (m, member) in group.members.iter().enumerate() {
                let stored = self.credentials.find(tenant, &member.selector).await?;
                usable_tokens(&stored)?;
                if let Some(reason) = UnknownAvailability::of(&stored.grant, member.managed) {
                    let field = format!("participants[{g}].members[{m}]");
                    unknown.push(UnknownAvailability { field, reason });
                }
                members.push(Member {
                    sub: stored.grant.sub,
                    managed_availability: member.managed,
                    availability_rule_ids: member.rule_ids.clone(),
                });
            }
            participants.push(wire::ParticipantGroup {
                members,
                required: group.required.map_or(Required::All(AllMarker), Required::Count),
            });
        }
        if !unknown.is_empty() {
            // Cronofy would count their unknown time as free: a double booking.
            return Err(Error::AvailabilityUnknown(unknown));
        }
        let query = wire::AvailabilityQuery {
            participants,
            required_duration: Minutes {
                minutes: request.duration_minutes,
            },
            query_periods: request
                .periods
                .iter()
                .map(|(start, end)| Period {
                    start: utc(*start),
                    end: utc(*end),
                })
                .collect(),
            buffer: request.buffer.map(|(before, after)| wire::Buffer {
                before: Minutes { minutes: before },
                after: Minutes { minutes: after },
            }),
        };
        self.resilience
            .call(&tenant.id, deadline, || self.cronofy.availability(&tenant.app, &query))
            .await
            .map(|periods| periods.into_iter().map(AvailablePeriod::from).collect())
            .map_err(|failure| upstream::guard_error(failure, upstream::Call::other("availability participant")))
    }
}
