//! How a caller's `event_id` becomes the `event_id` Cronofy keeps.
//!
//! Cronofy keys an application's own events by calendar and `event_id` per
//! *application* [docs: /developers/api/events/upsert-event]; it knows
//! nothing of calgate's tenants. So that tenants sharing one Cronofy
//! application never address the same event, each tenant writes under its
//! own [`EventIds`] scheme, chosen once and stored (`event_namespaces`):
//!
//! - [`EventIds::Callers`]: Cronofy's id is the caller's id. The first tenant
//!   of an application keeps it, and so does every tenant that wrote events
//!   before calgate namespaced ids: their events stay reachable by the ids
//!   they were written with.
//! - [`EventIds::Prefixed`]: Cronofy's id is `calgate:<12 hex digits>:` and
//!   the caller's id; the digits are the start of the SHA-256 of the tenant id.
//!
//! No caller may use an id beginning with [`RESERVED_PREFIX`], so the ids of
//! a `Callers` tenant and of every `Prefixed` tenant never meet.

use sha2::{Digest, Sha256};

/// The start of every namespaced id; refused in callers' ids.
pub const RESERVED_PREFIX: &str = "calgate:";

/// The longest `event_id` calgate sends to Cronofy (Cronofy documents no limit).
pub const MAX_UPSTREAM_ID: usize = 256;

/// One tenant's mapping of event ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventIds {
    /// Cronofy's id is the caller's.
    Callers,
    /// Cronofy's id is this prefix followed by the caller's.
    Prefixed(String),
}

impl EventIds {
    /// The prefixed scheme of a tenant.
    pub fn prefixed_for(tenant_id: &str) -> EventIds {
        let digest = Sha256::digest(tenant_id.as_bytes());
        EventIds::Prefixed(format!("{RESERVED_PREFIX}{}:", &hex::encode(digest)[..12]))
    }

    /// The scheme stored as `prefix` ('' for callers' ids).
    pub fn from_stored(prefix: &str) -> EventIds {
        if prefix.is_empty() {
            EventIds::Callers
        } else {
            EventIds::Prefixed(prefix.to_owned())
        }
    }

    /// How it is stored.
    pub fn stored(&self) -> &str {
        match self {
            EventIds::Callers => "",
            EventIds::Prefixed(prefix) => prefix,
        }
    }

    /// The longest caller id this scheme leaves room for, in characters.
    pub fn max_caller_len(&self) -> usize {
        MAX_UPSTREAM_ID - self.stored().chars().count()
    }

    /// Why a caller's id cannot be used under this scheme, if it cannot.
    pub fn check(&self, caller_id: &str) -> Result<(), String> {
        if caller_id.starts_with(RESERVED_PREFIX) {
            return Err(format!("must not begin with {RESERVED_PREFIX} (calgate's namespaces)"));
        }
        let max = self.max_caller_len();
        if caller_id.chars().count() > max {
            return Err(format!("must be at most {max} characters"));
        }
        Ok(())
    }

    /// Cronofy's id for a caller's id.
    pub fn upstream(&self, caller_id: &str) -> String {
        format!("{}{caller_id}", self.stored())
    }

    /// The caller's id for an id Cronofy reports, or None when the event is
    /// not this tenant's (another tenant of the application wrote it).
    pub fn caller<'a>(&self, upstream_id: &'a str) -> Option<&'a str> {
        match self {
            EventIds::Callers => (!upstream_id.starts_with(RESERVED_PREFIX)).then_some(upstream_id),
            EventIds::Prefixed(prefix) => upstream_id.strip_prefix(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_ids_round_trip_and_stay_apart_from_callers_ids() {
        let acme = EventIds::Callers;
        let globex = EventIds::prefixed_for("globex");
        let initech = EventIds::prefixed_for("initech");
        assert_ne!(globex, initech);
        let id = globex.upstream("evt-1");
        assert!(
            id.starts_with("calgate:") && id.ends_with(":evt-1") && id.len() == 21 + 5,
            "{id}"
        );
        assert_eq!(globex.caller(&id), Some("evt-1"));
        assert_eq!(initech.caller(&id), None, "another tenant's event");
        assert_eq!(acme.caller(&id), None, "a namespaced id is never a caller's");
        assert_eq!(acme.upstream("evt-1"), "evt-1");
        assert_eq!(acme.caller("evt-1"), Some("evt-1"));
        assert_eq!(globex.caller("evt-1"), None, "the callers' tenant's event");
    }

    #[test]
    fn caller_ids_leave_room_for_the_prefix_and_never_take_the_reserved_one() {
        let globex = EventIds::prefixed_for("globex");
        assert_eq!(globex.max_caller_len(), 235);
        assert!(globex.check(&"x".repeat(235)).is_ok());
        assert_eq!(
            globex.check(&"x".repeat(236)),
            Err("must be at most 235 characters".into())
        );
        assert!(EventIds::Callers.check(&"x".repeat(256)).is_ok());
        for scheme in [EventIds::Callers, globex] {
            assert!(scheme.check("calgate:abc:evt").is_err());
            assert!(scheme.check("calgate-evt").is_ok());
        }
    }

    #[test]
    fn the_stored_form_reads_back() {
        for scheme in [EventIds::Callers, EventIds::prefixed_for("acme")] {
            assert_eq!(EventIds::from_stored(scheme.stored()), scheme);
        }
    }
}
