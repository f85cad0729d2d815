//! What `GET /v1/events` needs to know of each managed event's history: when
//! it last changed, whether the user (not the application) changed it, and
//! the body of a deleted one.

use super::state::{Account, EventKey};

/// The history `GET /v1/events` needs of one event.
#[derive(Debug, Clone)]
pub(crate) struct EventRecord {
    /// Last created, changed or deleted (Cronofy's `updated`).
    pub(super) updated: time::OffsetDateTime,
    /// Last changed or deleted by the user rather than the application: what
    /// `last_modified` filters on ("when they were last externally modified,
    /// ie not by the application", docs /developers/calendars-events/event-filtering).
    pub(super) externally_modified: Option<time::OffsetDateTime>,
    /// The event's last body, once deleted.
    pub(super) tombstone: Option<serde_json::Value>,
}

/// Who changed an event: the application through the API, or the user in their calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangedBy {
    Application,
    User,
}

impl Account {
    /// Creates or replaces an event, noting when and by whom.
    pub(super) fn put_event(&mut self, key: EventKey, event: serde_json::Value, by: ChangedBy) {
        self.note_change(&key, by, None);
        self.events.insert(key, event);
    }

    fn note_change(&mut self, key: &EventKey, by: ChangedBy, tombstone: Option<serde_json::Value>) {
        let now = time::OffsetDateTime::now_utc();
        let earlier = self.event_log.get(key).and_then(|record| record.externally_modified);
        let externally_modified = if by == ChangedBy::User { Some(now) } else { earlier };
        self.event_log.insert(
            key.clone(),
            EventRecord {
                updated: now,
                externally_modified,
                tombstone,
            },
        );
    }

    /// Every event the application wrote is changed by the user now (tests
    /// use it to make many changes at once, without a notification).
    pub(super) fn touch_all_events(&mut self) {
        let now = time::OffsetDateTime::now_utc();
        for record in self.event_log.values_mut() {
            record.updated = now;
            record.externally_modified = Some(now);
        }
    }

    /// The key of the live event with this calendar and `event_id`, whichever
    /// application wrote it (what a user sees in their calendar app).
    pub(super) fn event_key(&self, calendar_id: &str, event_id: &str) -> Option<EventKey> {
        self.events
            .keys()
            .find(|(_, calendar, id)| calendar == calendar_id && id == event_id)
            .cloned()
    }

    /// Deletes an event, keeping its tombstone; false when there was none.
    pub(super) fn drop_event(&mut self, key: &EventKey, by: ChangedBy) -> bool {
        let Some(event) = self.events.remove(key) else {
            return false;
        };
        self.note_change(key, by, Some(event));
        true
    }
}
