//! What calgate reads from a user's calendars, in the domain's own terms:
//! the gRPC layer sees these, never the REST client's wire types.

use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339};

use crate::cronofy::{CalendarEntry, FreeBusyEntry, availability};

/// One of the user's calendars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// `cal_…`.
    pub calendar_id: String,
    /// Its name.
    pub name: String,
    /// The profile (provider account) holding it, `pro_…`.
    pub profile_id: String,
    /// The profile's name, usually an email address.
    pub profile_name: String,
    /// e.g. `google`.
    pub provider_name: String,
    /// Events cannot be written.
    pub readonly: bool,
    /// The profile's primary calendar.
    pub primary: bool,
    /// Deleted at the provider.
    pub deleted: bool,
    /// e.g. `sandbox`, `unrestricted`.
    pub permission_level: String,
    /// Integrated conferencing can be added to its events.
    pub integrated_conferencing_available: bool,
    /// Its events can carry attachments.
    pub attachments_available: bool,
}

impl From<CalendarEntry> for Calendar {
    fn from(entry: CalendarEntry) -> Self {
        Calendar {
            calendar_id: entry.calendar_id,
            name: entry.calendar_name,
            profile_id: entry.profile_id,
            profile_name: entry.profile_name,
            provider_name: entry.provider_name,
            readonly: entry.calendar_readonly,
            primary: entry.calendar_primary,
            deleted: entry.calendar_deleted,
            permission_level: entry.permission_level.unwrap_or_default(),
            integrated_conferencing_available: entry.calendar_integrated_conferencing_available,
            attachments_available: entry.calendar_attachments_available,
        }
    }
}

/// When a period starts or ends: an instant, or a date for all-day periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeriodTime {
    /// A UTC instant.
    Time(OffsetDateTime),
    /// An all-day boundary, `YYYY-MM-DD` as Cronofy gave it.
    Date(String),
}

impl PeriodTime {
    /// Cronofy's Time (`…Z`) as an instant; anything else (a Date) kept as text.
    fn parse(text: &str) -> PeriodTime {
        match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(at) => PeriodTime::Time(at),
            Err(_) => PeriodTime::Date(text.to_owned()),
        }
    }
}

/// One free/busy period of one calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeBusyPeriod {
    /// The calendar.
    pub calendar_id: String,
    /// Start.
    pub start: PeriodTime,
    /// End.
    pub end: PeriodTime,
    /// Cronofy's `free_busy_status`, e.g. `busy`, `tentative`, `free`.
    pub status: String,
}

impl From<FreeBusyEntry> for FreeBusyPeriod {
    fn from(entry: FreeBusyEntry) -> Self {
        FreeBusyPeriod {
            calendar_id: entry.calendar_id,
            start: PeriodTime::parse(&entry.start),
            end: PeriodTime::parse(&entry.end),
            status: entry.free_busy_status,
        }
    }
}

/// A period when enough participants are available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailablePeriod {
    /// Start, when Cronofy's answer held a valid instant.
    pub start: Option<OffsetDateTime>,
    /// End, likewise.
    pub end: Option<OffsetDateTime>,
    /// The subs available throughout.
    pub subs: Vec<String>,
}

impl From<availability::AvailablePeriod> for AvailablePeriod {
    fn from(period: availability::AvailablePeriod) -> Self {
        let parse = |text: &str| OffsetDateTime::parse(text, &Rfc3339).ok();
        AvailablePeriod {
            start: parse(&period.start),
            end: parse(&period.end),
            subs: period.participants.into_iter().map(|p| p.sub).collect(),
        }
    }
}

/// How far back free/busy reaches: Cronofy's documented minimum of `from`.
pub const FREE_BUSY_DAYS_BACK: i64 = 42;
/// How far ahead free/busy reaches: Cronofy's documented maximum of `to` (exclusive).
pub const FREE_BUSY_DAYS_AHEAD: i64 = 201;

/// Cronofy's default free/busy dates, `from` 42 days back and `to` 201 days
/// ahead of today in `tzid` (docs: events/free-busy); None for a zone calgate
/// does not know. calgate always sends both: Cronofy applies its defaults to
/// other events only and returns the application's own "across all of time".
pub fn default_free_busy_dates(now: OffsetDateTime, tzid: &str) -> Option<(Date, Date)> {
    let zone = jiff::tz::TimeZone::get(tzid).ok()?;
    let today = jiff::Timestamp::from_second(now.unix_timestamp())
        .ok()?
        .to_zoned_datetime(zone)
        .date();
    let today = Date::from_calendar_date(
        i32::from(today.year()),
        time::Month::try_from(u8::try_from(today.month()).ok()?).ok()?,
        u8::try_from(today.day()).ok()?,
    )
    .ok()?;
    Some((
        today - time::Duration::days(FREE_BUSY_DAYS_BACK),
        today + time::Duration::days(FREE_BUSY_DAYS_AHEAD),
    ))
}

/// The window a free/busy read may ask for, seen from `today` (UTC). One day
/// of slack each way: the caller's dates are in its `tzid`, up to a day from
/// UTC, and Cronofy itself decides the last day.
pub fn free_busy_window(today: Date) -> (Date, Date) {
    let slack = time::Duration::days(1);
    (
        today - time::Duration::days(FREE_BUSY_DAYS_BACK) - slack,
        today + time::Duration::days(FREE_BUSY_DAYS_AHEAD) + slack,
    )
}
