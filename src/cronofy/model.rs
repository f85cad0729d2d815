//! Cronofy's JSON answers, as far as calgate reads them.

use secrecy::SecretString;
use serde::Deserialize;

/// The token endpoint's answer to an exchange or a refresh (cronofy-api §4.1).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The new access token.
    pub access_token: SecretString,
    /// The refresh token; Cronofy may rotate it on every refresh, and may omit it.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token in seconds.
    pub expires_in: u32,
    /// Space-separated granted scopes.
    #[serde(default)]
    pub scope: String,
    /// `acc_…`.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The account identifier calgate keys grants by.
    #[serde(default)]
    pub sub: Option<String>,
    /// Enterprise Connect service accounts only.
    #[serde(default)]
    pub service_account_id: Option<String>,
    /// The calendar profile the user linked.
    #[serde(default)]
    pub linking_profile: Option<LinkingProfile>,
    /// The account's UserInfo, when Cronofy embeds it (docs: /developers/api/identity/userinfo).
    #[serde(default)]
    pub userinfo: Option<UserInfo>,
}

impl TokenResponse {
    /// The profile this authorization linked: `linking_profile`, completed
    /// from the embedded UserInfo's profile of the same id — or, without a
    /// `linking_profile`, UserInfo's only profile.
    pub fn linked_profile(&self) -> LinkingProfile {
        let profiles = self
            .userinfo
            .as_ref()
            .and_then(|info| info.data.as_ref())
            .map_or(&[][..], |data| data.profiles.as_slice());
        match &self.linking_profile {
            Some(linked) => {
                let same = profiles
                    .iter()
                    .find(|p| p.profile_id.is_some() && p.profile_id == linked.profile_id);
                LinkingProfile {
                    provider_name: linked
                        .provider_name
                        .clone()
                        .or_else(|| same.and_then(|p| p.provider_name.clone())),
                    provider_service: linked
                        .provider_service
                        .clone()
                        .or_else(|| same.and_then(|p| p.provider_service.clone())),
                    profile_id: linked.profile_id.clone(),
                    profile_name: linked
                        .profile_name
                        .clone()
                        .or_else(|| same.and_then(|p| p.profile_name.clone())),
                    profile_connected: same.and_then(|p| p.profile_connected),
                    profile_relink_url: same.and_then(|p| p.profile_relink_url.clone()),
                    profile_calendars: Vec::new(),
                }
            }
            None => match profiles {
                [only] => only.clone(),
                _ => LinkingProfile::default(),
            },
        }
    }
}

/// UserInfo as embedded in a token response, as far as calgate reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo {
    /// `cronofy.data`: the account's authorization and profiles.
    #[serde(default, rename = "cronofy.data")]
    pub data: Option<UserInfoData>,
}

/// `cronofy.data` of UserInfo.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfoData {
    /// The account's calendar profiles.
    #[serde(default)]
    pub profiles: Vec<LinkingProfile>,
    /// The account's conferencing profiles (Zoom, Teams…) [docs:
    /// /developers/api/conferencing-services/conferencing-profiles].
    #[serde(default)]
    pub conferencing_profiles: Vec<LinkingProfile>,
}

/// The calendar profile linked by an authorization.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LinkingProfile {
    /// e.g. `google`, `google_free_busy`.
    #[serde(default)]
    pub provider_name: Option<String>,
    /// e.g. `gsuite`.
    #[serde(default)]
    pub provider_service: Option<String>,
    /// `pro_…`.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// Usually an email address.
    #[serde(default)]
    pub profile_name: Option<String>,
    /// UserInfo: whether Cronofy can sync the profile (absent: assume it can).
    #[serde(default)]
    pub profile_connected: Option<bool>,
    /// UserInfo: where the user relinks a disconnected profile.
    #[serde(default)]
    pub profile_relink_url: Option<String>,
    /// UserInfo: a calendar profile's calendars.
    #[serde(default)]
    pub profile_calendars: Vec<ProfileCalendar>,
}

/// One calendar of a UserInfo profile, as far as calgate reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProfileCalendar {
    /// `cal_…`.
    pub calendar_id: String,
}

impl LinkingProfile {
    /// The provider name and service, empty when absent.
    pub fn provider(&self) -> (&str, &str) {
        (
            self.provider_name.as_deref().unwrap_or_default(),
            self.provider_service.as_deref().unwrap_or_default(),
        )
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CalendarsResponse {
    pub(super) calendars: Vec<CalendarEntry>,
}

/// One entry of `GET /v1/calendars`.
#[derive(Debug, Clone, Deserialize)]
pub struct CalendarEntry {
    /// `cal_…`.
    pub calendar_id: String,
    /// Name.
    #[serde(default)]
    pub calendar_name: String,
    /// `pro_…`.
    #[serde(default)]
    pub profile_id: String,
    /// Usually an email address.
    #[serde(default)]
    pub profile_name: String,
    /// e.g. `google`; new values appear over time.
    #[serde(default)]
    pub provider_name: String,
    /// Events cannot be written.
    #[serde(default)]
    pub calendar_readonly: bool,
    /// Deleted at the provider.
    #[serde(default)]
    pub calendar_deleted: bool,
    /// The profile's primary calendar.
    #[serde(default)]
    pub calendar_primary: bool,
    /// e.g. `sandbox`, `unrestricted`.
    #[serde(default)]
    pub permission_level: Option<String>,
    /// Integrated conferencing can be added to its events.
    #[serde(default)]
    pub calendar_integrated_conferencing_available: bool,
    /// Its events can carry attachments.
    #[serde(default)]
    pub calendar_attachments_available: bool,
}

/// One period of `GET /v1/free_busy`.
#[derive(Debug, Clone, Deserialize)]
pub struct FreeBusyEntry {
    /// The calendar.
    pub calendar_id: String,
    /// A Time (`2026-03-01T09:00:00Z`) or a Date (`2026-03-01`).
    pub start: String,
    /// Same forms as start.
    pub end: String,
    /// e.g. `busy`, `tentative`, `free`.
    #[serde(default)]
    pub free_busy_status: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct FreeBusyResponse {
    #[serde(default)]
    pub(super) pages: Option<FreeBusyPages>,
    #[serde(default)]
    pub(super) free_busy: Vec<FreeBusyEntry>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FreeBusyPages {
    #[serde(default)]
    pub(super) next_page: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct BatchResponse {
    pub(super) batch: Vec<BatchItemResponse>,
}

#[derive(Debug, Deserialize)]
pub(super) struct BatchItemResponse {
    pub(super) status: u16,
    #[serde(default)]
    pub(super) data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct OAuthErrorBody {
    pub(super) error: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct UnprocessableBody {
    #[serde(default)]
    pub(super) errors: std::collections::BTreeMap<String, Vec<UnprocessableEntry>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct UnprocessableEntry {
    #[serde(default)]
    pub(super) key: String,
    #[serde(default)]
    pub(super) description: String,
}
