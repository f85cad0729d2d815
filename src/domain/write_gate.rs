//! The check every write to a calendar passes: is the calendar's profile
//! connected? (See [`super::profile`].)

use super::{
    error::Error,
    grant::{Grant, GrantStatus},
    profile::{ProfileKind, Profiles},
};

/// What a write to one of a grant's calendars must pass: the grant's
/// disconnected calendar profiles. Cronofy accepts a write to a calendar it
/// cannot sync and never delivers it, so calgate refuses it first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteGate {
    /// PROFILE_DISCONNECTED: every calendar profile is (or, before calgate
    /// knew the profiles, the one linked was), with the grant's relink URL.
    whole_grant: Option<Option<String>>,
    profiles: Profiles,
}

impl WriteGate {
    /// The gate of `grant` as stored now.
    pub fn of(grant: &Grant) -> WriteGate {
        WriteGate {
            whole_grant: (grant.status == GrantStatus::ProfileDisconnected).then(|| grant.relink_url.clone()),
            profiles: grant.profiles.clone(),
        }
    }

    /// Refuses integrated conferencing through a conferencing profile
    /// Cronofy reports disconnected (with its relink URL): the event would be
    /// written without its conference.
    pub fn check_conferencing(&self, profile_id: &str) -> Result<(), Error> {
        match self
            .profiles
            .0
            .iter()
            .find(|p| p.kind == ProfileKind::Conferencing && p.profile_id == profile_id && !p.connected)
        {
            Some(profile) => Err(Error::ProfileDisconnected {
                relink_url: profile.relink_url.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Refuses a write to `calendar_id` when its calendar profile is
    /// disconnected (with that profile's relink URL).
    pub fn check(&self, calendar_id: &str) -> Result<(), Error> {
        if let Some(profile) = self.profiles.disconnected_holding(calendar_id) {
            return Err(Error::ProfileDisconnected {
                relink_url: profile.relink_url.clone(),
            });
        }
        match &self.whole_grant {
            Some(relink_url) => Err(Error::ProfileDisconnected {
                relink_url: relink_url.clone(),
            }),
            None => Ok(()),
        }
    }
}
