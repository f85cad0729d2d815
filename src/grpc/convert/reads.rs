//! Parsing batches, free/busy and availability requests; showing their answers.

use super::{event_fields, pb, selector, timestamp};
use crate::domain::{
    AvailabilityGroup, AvailabilityMember, AvailabilityRequest, BatchOp, Error, FreeBusyQuery, MAX_BATCH_ITEMS,
    Violations,
    event::limits,
    grant::GrantSelector,
    reads::{AvailablePeriod, FreeBusyPeriod, PeriodTime},
    rules,
};

/// Parses BatchWriteEvents into (selector, writes); item fields are named
/// `items[N].upsert.event.summary`, `items[N].delete.event_id`, ….
pub fn batch_request(request: &pb::BatchWriteEventsRequest) -> Result<(GrantSelector, Vec<BatchOp>), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    if request.items.is_empty() {
        v.add("items", format!("must hold 1 to {MAX_BATCH_ITEMS} writes"));
    }
    let items = v.bounded("items", &request.items, MAX_BATCH_ITEMS, "writes");
    let mut ops = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = format!("items[{index}]");
        match &item.operation {
            None => v.add(&path, "one of upsert or delete is required"),
            Some(pb::batch_item::Operation::Upsert(upsert)) => {
                let mut inner = Violations::default();
                let calendar_id = inner.check("calendar_id", rules::identifier(&upsert.calendar_id, limits::ID));
                let event = match &upsert.event {
                    Some(event) => event_fields::parse_event(event, &mut inner),
                    None => {
                        inner.add("event", "is required");
                        None
                    }
                };
                v.nest(&format!("{path}.upsert."), inner);
                if let (Some(calendar_id), Some(event)) = (calendar_id, event) {
                    ops.push(BatchOp::Upsert {
                        calendar_id,
                        event: Box::new(event),
                    });
                }
            }
            Some(pb::batch_item::Operation::Delete(delete)) => {
                let calendar_id = v.check(
                    format!("{path}.delete.calendar_id"),
                    rules::identifier(&delete.calendar_id, limits::ID),
                );
                let event_id = v.check(
                    format!("{path}.delete.event_id"),
                    rules::identifier(&delete.event_id, limits::ID),
                );
                if let (Some(calendar_id), Some(event_id)) = (calendar_id, event_id) {
                    ops.push(BatchOp::Delete { calendar_id, event_id });
                }
            }
        }
    }
    let selector = v.finish_with(selector)?;
    Ok((selector, ops))
}

/// Parses ReadFreeBusy into (selector, query).
pub fn free_busy_request(request: &pb::ReadFreeBusyRequest) -> Result<(GrantSelector, FreeBusyQuery), Error> {
    let mut v = Violations::default();
    let selector = selector(request, &mut v);
    // Empty means Cronofy's default (42 days back, 201 days ahead).
    let date = |v: &mut Violations, field: &str, text: &str| {
        if text.is_empty() {
            None
        } else {
            v.check(field, rules::date(text))
        }
    };
    let from = date(&mut v, "from", &request.from);
    let to = date(&mut v, "to", &request.to);
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        v.add("to", "must be a later date than from (to is exclusive)");
    }
    v.check("tzid", rules::tzid(&request.tzid));
    for (index, calendar_id) in v
        .bounded("calendar_ids", &request.calendar_ids, MAX_BATCH_ITEMS, "calendars")
        .iter()
        .enumerate()
    {
        v.check(
            format!("calendar_ids[{index}]"),
            rules::identifier(calendar_id, limits::ID),
        );
    }
    let selector = v.finish_with(selector)?;
    Ok((
        selector,
        FreeBusyQuery {
            from,
            to,
            tzid: request.tzid.clone(),
            calendar_ids: request.calendar_ids.clone(),
            // calgate's default differs from Cronofy's: a product placing
            // meetings must see the ones it placed itself.
            include_managed: request.include_managed.unwrap_or(true),
        },
    ))
}

/// QueryAvailability's participant groups at most.
pub(crate) const MAX_GROUPS: usize = 10;
/// Members of one participant group at most.
pub(crate) const MAX_MEMBERS: usize = 10;
/// QueryAvailability's query periods at most.
pub(crate) const MAX_PERIODS: usize = 50;

/// Availability rules named for one member at most.
pub(crate) const MAX_RULE_IDS: usize = 10;
/// An availability rule id's length at most (docs: availability-rules, "up to 64 characters").
const MAX_RULE_ID_LEN: usize = 64;

/// One QueryAvailability member at `field`: who, and its managed availability.
fn availability_member(v: &mut Violations, field: &str, member: &pb::GrantRef) -> Option<AvailabilityMember> {
    let selector = match &member.user {
        Some(pb::grant_ref::User::Sub(sub)) => v
            .check(format!("{field}.sub"), rules::identifier(sub, limits::ID))
            .map(GrantSelector::Sub),
        Some(pb::grant_ref::User::UserRef(user_ref)) => v
            .check(format!("{field}.user_ref"), rules::identifier(user_ref, limits::ID))
            .map(GrantSelector::UserRef),
        None => {
            v.add(field.to_owned(), "one of sub or user_ref is required");
            None
        }
    };
    let rules_field = format!("{field}.availability_rule_ids");
    if !member.availability_rule_ids.is_empty() && !member.managed_availability {
        v.add(rules_field.clone(), "only with managed_availability");
    }
    let rule_ids: Vec<String> = v
        .bounded(&rules_field, &member.availability_rule_ids, MAX_RULE_IDS, "rule ids")
        .iter()
        .enumerate()
        .filter_map(|(r, id)| {
            let ok = !id.is_empty() && id.len() <= MAX_RULE_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
            if !ok {
                v.add(
                    format!("{rules_field}[{r}]"),
                    format!("must be 1 to {MAX_RULE_ID_LEN} printable ASCII characters"),
                );
            }
            ok.then(|| id.clone())
        })
        .collect();
    Some(AvailabilityMember {
        selector: selector?,
        managed: member.managed_availability,
        rule_ids,
    })
}

/// Parses QueryAvailability: groups, duration, periods, buffer.
pub fn availability_request(request: &pb::QueryAvailabilityRequest) -> Result<AvailabilityRequest, Error> {
    const MAX_MINUTES: u32 = 1440;
    let mut v = Violations::default();
    if request.participants.is_empty() {
        v.add("participants", format!("must hold 1 to {MAX_GROUPS} groups"));
    }
    let mut groups = Vec::new();
    let participants = v.bounded("participants", &request.participants, MAX_GROUPS, "groups");
    for (g, group) in participants.iter().enumerate() {
        let path = format!("participants[{g}]");
        if group.members.is_empty() {
            v.add(format!("{path}.members"), format!("must hold 1 to {MAX_MEMBERS} users"));
        }
        let members: Vec<AvailabilityMember> = v
            .bounded(&format!("{path}.members"), &group.members, MAX_MEMBERS, "users")
            .iter()
            .enumerate()
            .filter_map(|(m, member)| availability_member(&mut v, &format!("{path}.members[{m}]"), member))
            .collect();
        let required = match group.required {
            None | Some(pb::participant_group::Required::All(_)) => None,
            Some(pb::participant_group::Required::Count(count)) => {
                if count == 0 || count as usize > group.members.len() {
                    v.add(format!("{path}.count"), "must be between 1 and the number of members");
                }
                Some(count)
            }
        };
        groups.push(AvailabilityGroup { members, required });
    }
    if !(1..=MAX_MINUTES).contains(&request.required_duration_minutes) {
        v.add(
            "required_duration_minutes",
            format!("must be between 1 and {MAX_MINUTES}"),
        );
    }
    if request.query_periods.is_empty() {
        v.add("query_periods", format!("must hold 1 to {MAX_PERIODS} periods"));
    }
    let mut periods = Vec::new();
    let query_periods = v.bounded("query_periods", &request.query_periods, MAX_PERIODS, "periods");
    for (p, period) in query_periods.iter().enumerate() {
        let field = format!("query_periods[{p}]");
        let instant = |v: &mut Violations, name: &str, at: Option<&prost_types::Timestamp>| match at {
            Some(at) => v.check(format!("{field}.{name}"), event_fields::whole_second(at)),
            None => {
                v.add(format!("{field}.{name}"), "is required");
                None
            }
        };
        let start = instant(&mut v, "start", period.start.as_ref());
        let end = instant(&mut v, "end", period.end.as_ref());
        match (start, end) {
            (Some(start), Some(end)) if end > start => periods.push((start, end)),
            (Some(_), Some(_)) => v.add(format!("{field}.end"), "must be later than start"),
            _ => {}
        }
    }
    let buffer = request.buffer.as_ref().map(|b| {
        for (name, minutes) in [("before_minutes", b.before_minutes), ("after_minutes", b.after_minutes)] {
            if minutes > MAX_MINUTES {
                v.add(format!("buffer.{name}"), format!("must be at most {MAX_MINUTES}"));
            }
        }
        (b.before_minutes, b.after_minutes)
    });
    v.finish()?;
    Ok(AvailabilityRequest {
        groups,
        duration_minutes: request.required_duration_minutes,
        periods,
        buffer,
    })
}

/// An available period as the API shows it.
pub fn available_period(period: AvailablePeriod) -> pb::AvailablePeriod {
    pb::AvailablePeriod {
        start: period.start.map(timestamp),
        end: period.end.map(timestamp),
        subs: period.subs,
    }
}

/// A free/busy period as the API shows it.
pub fn free_busy_period(period: FreeBusyPeriod) -> pb::FreeBusyPeriod {
    pb::FreeBusyPeriod {
        calendar_id: period.calendar_id,
        start: Some(period_time(period.start)),
        end: Some(period_time(period.end)),
        status: period.status,
    }
}

fn period_time(time: PeriodTime) -> pb::EventTime {
    let value = match time {
        PeriodTime::Time(at) => pb::event_time::Value::Time(timestamp(at)),
        PeriodTime::Date(date) => pb::event_time::Value::Date(date),
    };
    pb::EventTime {
        value: Some(value),
        tzid: None,
    }
}
