//! An account's profiles as UserInfo describes them (`cronofy.data.profiles`
//! and `cronofy.data.conferencing_profiles`, docs
//! /developers/api/identity/userinfo): several per account, each connected or
//! not. A write is refused only when its calendar belongs to a disconnected
//! calendar profile; availability is unknown while any calendar profile is.

use serde::{Deserialize, Serialize};

/// Calendars, or conferencing (Zoom, Teams…) used for integrated conferencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    /// A calendar profile: its calendars are where events are written.
    Calendar,
    /// A conferencing profile: integrated conferencing on writes needs it connected.
    Conferencing,
}

/// One profile of an account, as last read from UserInfo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// `pro_…`.
    pub profile_id: String,
    /// Calendar or conferencing.
    pub kind: ProfileKind,
    /// e.g. `google`, `zoom`.
    pub provider_name: String,
    /// Usually an email address.
    pub profile_name: String,
    /// Whether Cronofy can sync (or use) it.
    pub connected: bool,
    /// Where the user relinks it while it is disconnected, when Cronofy gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relink_url: Option<String>,
    /// A calendar profile's calendars.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calendar_ids: Vec<String>,
}

/// What a change in an account's profiles means for its watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfilesChange {
    /// A calendar profile was disconnected (writes to its calendars fail).
    Disconnected,
    /// A disconnected calendar profile is connected again.
    Reconnected,
    /// A conferencing profile was disconnected.
    ConferencingDisconnected,
    /// A disconnected conferencing profile is connected again.
    ConferencingReconnected,
}

/// Most profiles kept per grant: far more than a person links (a work and a
/// personal calendar, a conferencing service or two), and a bound on what
/// one UserInfo answer makes calgate store and put in every `Grant`.
pub const MAX_PROFILES: usize = 32;
/// Most calendar ids kept per profile.
pub const MAX_PROFILE_CALENDARS: usize = 256;
/// Longest id, name or URL kept, in bytes: a profile or calendar with a
/// longer id is left out, a longer name or relink URL is dropped.
pub const MAX_PROFILE_TEXT: usize = 1024;

/// The profiles of one grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profiles(pub Vec<Profile>);

impl Profiles {
    /// The profiles Cronofy listed, within [`MAX_PROFILES`],
    /// [`MAX_PROFILE_CALENDARS`] and [`MAX_PROFILE_TEXT`]. Past the count,
    /// what decides writes and status is kept first: one connected calendar
    /// profile, the disconnected ones, then the rest; in Cronofy's order.
    pub fn bounded(listed: Vec<Profile>) -> Profiles {
        let fits = |text: &str| text.len() <= MAX_PROFILE_TEXT;
        let mut listed: Vec<Profile> = listed
            .into_iter()
            .filter(|p| fits(&p.profile_id))
            .map(|mut p| {
                p.calendar_ids.retain(|id| fits(id));
                p.calendar_ids.truncate(MAX_PROFILE_CALENDARS);
                for text in [&mut p.provider_name, &mut p.profile_name] {
                    if !fits(text) {
                        text.clear();
                    }
                }
                p.relink_url = p.relink_url.filter(|url| fits(url));
                p
            })
            .collect();
        if listed.len() > MAX_PROFILES {
            let connected_calendar = listed
                .iter()
                .position(|p| p.connected && p.kind == ProfileKind::Calendar);
            // One connected calendar profile first (else the grant would read all
            // disconnected), then the disconnected ones, then the rest.
            let rank = |i: usize, p: &Profile| match (Some(i) == connected_calendar, p.connected) {
                (true, _) => 0,
                (false, false) => 1,
                (false, true) => 2,
            };
            let mut order: Vec<usize> = (0..listed.len()).collect();
            order.sort_by_key(|&i| (rank(i, &listed[i]), i));
            order.truncate(MAX_PROFILES);
            order.sort_unstable();
            let mut kept = order.into_iter().peekable();
            let mut index = 0;
            listed.retain(|_| {
                let keep = kept.next_if_eq(&index).is_some();
                index += 1;
                keep
            });
        }
        Profiles(listed)
    }

    /// The calendar profiles Cronofy cannot sync.
    pub fn disconnected_calendars(&self) -> impl Iterator<Item = &Profile> {
        self.0
            .iter()
            .filter(|p| p.kind == ProfileKind::Calendar && !p.connected)
    }

    /// Whether any calendar profile is known and every one is disconnected.
    pub fn all_calendars_disconnected(&self) -> bool {
        let mut calendars = self.0.iter().filter(|p| p.kind == ProfileKind::Calendar).peekable();
        calendars.peek().is_some() && calendars.all(|p| !p.connected)
    }

    /// The disconnected calendar profile holding `calendar_id`, if any.
    pub fn disconnected_holding(&self, calendar_id: &str) -> Option<&Profile> {
        self.disconnected_calendars()
            .find(|p| p.calendar_ids.iter().any(|id| id == calendar_id))
    }

    /// What changed from `before` to `self`, most important first: a
    /// calendar profile disconnected, reconnected, then conferencing.
    pub fn change_from(&self, before: &Profiles) -> Option<ProfilesChange> {
        let was = |profile: &Profile| {
            before
                .0
                .iter()
                .find(|p| p.profile_id == profile.profile_id)
                .is_none_or(|p| p.connected)
        };
        let flipped = |kind: ProfileKind, now_connected: bool| {
            self.0
                .iter()
                .any(|p| p.kind == kind && p.connected == now_connected && was(p) != now_connected)
        };
        if flipped(ProfileKind::Calendar, false) {
            Some(ProfilesChange::Disconnected)
        } else if flipped(ProfileKind::Calendar, true) {
            Some(ProfilesChange::Reconnected)
        } else if flipped(ProfileKind::Conferencing, false) {
            Some(ProfilesChange::ConferencingDisconnected)
        } else if flipped(ProfileKind::Conferencing, true) {
            Some(ProfilesChange::ConferencingReconnected)
        } else {
            None
        }
    }

    /// As stored (JSON), or None for no profiles known.
    pub fn to_stored(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| serde_json::to_string(&self.0).expect("profiles of strings always serialize"))
    }

    /// The stored form back; None when it is not calgate's.
    pub fn from_stored(text: Option<&str>) -> Option<Profiles> {
        match text {
            None => Some(Profiles::default()),
            Some(text) => serde_json::from_str(text).ok().map(Profiles),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: &str, kind: ProfileKind, connected: bool, calendars: &[&str]) -> Profile {
        Profile {
            profile_id: id.into(),
            kind,
            provider_name: "google".into(),
            profile_name: "ada@example.com".into(),
            connected,
            relink_url: (!connected).then(|| format!("https://relink/{id}")),
            calendar_ids: calendars.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn what_one_answer_lists_is_bounded_keeping_what_decides() {
        let mut listed: Vec<Profile> = (0..40)
            .map(|i| profile(&format!("pro_{i}"), ProfileKind::Calendar, i % 10 != 9, &["cal"]))
            .collect();
        listed.push(profile(
            &"x".repeat(MAX_PROFILE_TEXT + 1),
            ProfileKind::Calendar,
            false,
            &[],
        ));
        listed[0].calendar_ids = (0..300).map(|i| format!("cal_{i}")).collect();
        listed[1].profile_name = "n".repeat(MAX_PROFILE_TEXT + 1);
        let bounded = Profiles::bounded(listed);
        assert_eq!(bounded.0.len(), MAX_PROFILES);
        assert!(
            bounded.0.iter().all(|p| p.profile_id.len() <= MAX_PROFILE_TEXT),
            "an over-long id goes"
        );
        let disconnected: Vec<&str> = bounded
            .disconnected_calendars()
            .map(|p| p.profile_id.as_str())
            .collect();
        assert_eq!(
            disconnected,
            ["pro_9", "pro_19", "pro_29", "pro_39"],
            "every disconnected one stays"
        );
        assert_eq!(bounded.0[0].profile_id, "pro_0", "in Cronofy's order");
        assert_eq!(bounded.0[0].calendar_ids.len(), MAX_PROFILE_CALENDARS);
        assert!(bounded.0[1].profile_name.is_empty());
        assert!(!bounded.all_calendars_disconnected());

        // Only disconnected ones past the count: one connected calendar profile still stays.
        let mut listed: Vec<Profile> = (0..40)
            .map(|i| profile(&format!("pro_{i}"), ProfileKind::Calendar, false, &[]))
            .collect();
        listed.push(profile("pro_ok", ProfileKind::Calendar, true, &[]));
        let bounded = Profiles::bounded(listed);
        assert_eq!(bounded.0.len(), MAX_PROFILES);
        assert!(bounded.0.iter().any(|p| p.profile_id == "pro_ok"));
        assert!(!bounded.all_calendars_disconnected());
    }

    #[test]
    fn only_a_disconnected_profiles_calendars_are_refused() {
        let profiles = Profiles(vec![
            profile("pro_work", ProfileKind::Calendar, true, &["cal_work"]),
            profile("pro_home", ProfileKind::Calendar, false, &["cal_home"]),
            profile("pro_zoom", ProfileKind::Conferencing, false, &[]),
        ]);
        assert_eq!(
            profiles.disconnected_holding("cal_home").map(|p| p.profile_id.as_str()),
            Some("pro_home")
        );
        assert!(profiles.disconnected_holding("cal_work").is_none());
        assert!(profiles.disconnected_holding("cal_unknown").is_none());
        assert!(!profiles.all_calendars_disconnected());
        assert!(!Profiles::default().all_calendars_disconnected());
    }

    #[test]
    fn changes_say_what_flipped() {
        let both = Profiles(vec![
            profile("pro_a", ProfileKind::Calendar, true, &["cal_a"]),
            profile("pro_z", ProfileKind::Conferencing, true, &[]),
        ]);
        let mut a_down = both.clone();
        a_down.0[0].connected = false;
        let mut z_down = both.clone();
        z_down.0[1].connected = false;
        assert_eq!(a_down.change_from(&both), Some(ProfilesChange::Disconnected));
        assert_eq!(both.change_from(&a_down), Some(ProfilesChange::Reconnected));
        assert_eq!(
            z_down.change_from(&both),
            Some(ProfilesChange::ConferencingDisconnected)
        );
        assert_eq!(both.change_from(&z_down), Some(ProfilesChange::ConferencingReconnected));
        assert_eq!(both.change_from(&both), None);
        assert_eq!(
            a_down.change_from(&Profiles::default()),
            Some(ProfilesChange::Disconnected)
        );
        let stored = a_down.to_stored();
        assert_eq!(Profiles::from_stored(stored.as_deref()), Some(a_down));
        assert_eq!(Profiles::from_stored(Some("not json")), None);
    }
}
