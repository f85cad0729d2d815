//! Grants: a user's (or service account's) stored authorization.

use std::fmt;

use secrecy::SecretString;
use time::OffsetDateTime;

use super::profile::Profiles;

/// How a grant was connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectMode {
    /// A user connected their own calendar.
    Individual,
    /// An organisation's admin connected through Enterprise Connect.
    Enterprise,
}

/// Whether calgate can act on a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    /// Tokens are usable.
    Active,
    /// Cronofy refused the refresh token; the user must connect again.
    NeedsReauth,
    /// Revoked; tokens erased.
    Revoked,
    /// Cronofy can no longer sync the user's calendar profile: writes would be
    /// accepted and never arrive, so calgate refuses them until the user relinks.
    ProfileDisconnected,
}

/// A user's grant or an Enterprise Connect service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// One user's calendar account.
    User,
    /// An Enterprise Connect service account.
    ServiceAccount,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The value stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }

            /// Parses a stored value.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($ty::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(ConnectMode { Individual => "individual", Enterprise => "enterprise" });
text_enum!(GrantStatus { Active => "active", NeedsReauth => "needs_reauth", Revoked => "revoked", ProfileDisconnected => "profile_disconnected" });
text_enum!(GrantKind { User => "user", ServiceAccount => "service_account" });

/// How the user let the application reach their calendar (Cronofy's Calendar
/// Access Modes, docs: /developers/authorization/access-modes). A user asked
/// for `free_busy_write` may choose a mode in which calgate's writes arrive
/// as email invites and integrated conferencing does not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    /// Writes go straight into the calendar.
    ReadWrite,
    /// Free/Busy mode (`google_free_busy`, `ms_graph_free_busy`): writes are email invites.
    FreeBusy,
    /// No-Access mode (provider `cronofy`): writes are email invites.
    NoAccess,
}

impl AccessMode {
    /// The mode of a linked profile, from its provider name and service.
    pub fn of_provider(provider_name: &str, provider_service: &str) -> AccessMode {
        let is = |names: &[&str]| names.contains(&provider_name) || names.contains(&provider_service);
        if is(&["cronofy"]) {
            AccessMode::NoAccess
        } else if is(&["google_free_busy", "ms_graph_free_busy"]) {
            AccessMode::FreeBusy
        } else {
            AccessMode::ReadWrite
        }
    }

    /// Whether writes reach the user as email invites rather than calendar writes.
    pub fn writes_as_invites(self) -> bool {
        self != AccessMode::ReadWrite
    }
}

/// How a call names a connected user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSelector {
    /// Cronofy's account identifier.
    Sub(String),
    /// The caller's own id, bound at BuildAuthorizeUrl.
    UserRef(String),
    /// A grant whose erasure waits, by sub: only the erasure worker selects
    /// this way (no request can), and no other selector finds such a grant.
    Erasing(String),
}

/// What callers may see of a grant: never its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Cronofy's account identifier.
    pub sub: String,
    /// `acc_…`.
    pub account_id: String,
    /// The user_ref this grant was reached by, or the latest bound one.
    pub user_ref: Option<String>,
    /// Granted scopes.
    pub scope: Vec<String>,
    /// How it was connected.
    pub connect_mode: ConnectMode,
    /// User or service account.
    pub kind: GrantKind,
    /// Usable or not.
    pub status: GrantStatus,
    /// Provider of the linked profile.
    pub provider_name: String,
    /// Name of the linked profile.
    pub profile_name: String,
    /// Writes reach the user as email invites (Free/Busy or No-Access mode).
    pub free_busy_mode: bool,
    /// First stored.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
    /// Why the grant is in its status, when calgate knows.
    pub status_reason: Option<StatusReason>,
    /// Where the user relinks a disconnected profile, when Cronofy gave one.
    pub relink_url: Option<String>,
    /// The account's profiles as UserInfo last described them (none until
    /// calgate has read it).
    pub profiles: Profiles,
    /// Whether calgate hears of changes Cronofy sees.
    pub change_tracking: ChangeTracking,
}

/// Whether calgate hears, through a Cronofy push notification channel, of
/// what happens to a grant outside calgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeTracking {
    /// No channel: `[callbacks]` is not configured, the grant is a service
    /// account, or it was revoked.
    Off,
    /// The channel is being created; the last attempt's failure, if any.
    Pending {
        /// Why the last attempt failed.
        error: Option<String>,
    },
    /// The channel is open but Cronofy refuses to read the grant's events:
    /// profile changes only.
    ProfileOnly,
    /// The channel is open: event and profile changes.
    Events,
}

impl Grant {
    /// How writes reach the user. Stored as the linked profile's provider and
    /// the invite flag: provider `cronofy` is No-Access mode, any other
    /// invite-mode grant Free/Busy mode.
    pub fn access_mode(&self) -> AccessMode {
        stored_access_mode(&self.provider_name, self.free_busy_mode)
    }
}

/// The access mode of a stored grant (see [`Grant::access_mode`]).
fn stored_access_mode(provider_name: &str, writes_as_invites: bool) -> AccessMode {
    match (writes_as_invites, provider_name) {
        (false, _) => AccessMode::ReadWrite,
        (true, "cronofy") => AccessMode::NoAccess,
        (true, _) => AccessMode::FreeBusy,
    }
}

/// Why a grant is in its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusReason {
    /// Cronofy refused the refresh token: the user revoked access, or it lapsed.
    InvalidGrant,
    /// Cronofy refused the refresh token after a refresh whose answer never
    /// arrived (a timeout or 5xx after sending): that refresh may have rotated
    /// the token. Not the user's doing.
    RefreshAnswerLost,
}

impl StatusReason {
    /// As stored and shown: `INVALID_GRANT`, `REFRESH_ANSWER_LOST`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusReason::InvalidGrant => "INVALID_GRANT",
            StatusReason::RefreshAnswerLost => "REFRESH_ANSWER_LOST",
        }
    }

    /// The stored form back.
    pub fn parse(value: &str) -> Option<StatusReason> {
        match value {
            "INVALID_GRANT" => Some(StatusReason::InvalidGrant),
            "REFRESH_ANSWER_LOST" => Some(StatusReason::RefreshAnswerLost),
            _ => None,
        }
    }
}

/// A grant's OAuth tokens, decrypted.
#[derive(Debug)]
pub struct Tokens {
    /// Bearer token for API calls.
    pub access_token: SecretString,
    /// Long-lived token that gets new access tokens.
    pub refresh_token: SecretString,
    /// When the access token stops working.
    pub access_expires_at: OffsetDateTime,
}

/// A grant as stored, with its tokens and the version writers compare against.
#[derive(Debug)]
pub struct StoredGrant {
    /// The visible part.
    pub grant: Grant,
    /// None once revoked.
    pub tokens: Option<Tokens>,
    /// Incremented by every write; token writes compare-and-swap on it.
    pub version: i64,
    /// Its erasure waits for Cronofy to confirm the person's events deleted:
    /// hidden from callers, kept for the erasure worker.
    pub erasing: bool,
}
