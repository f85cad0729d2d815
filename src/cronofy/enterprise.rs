//! Enterprise Connect: asking for a member's authorization, and the callback
//! Cronofy later sends (cronofy-api §3.3).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// `POST /v1/service_account_authorizations`, single form.
#[derive(Debug, Serialize)]
pub struct MemberAuthorizationRequest<'a> {
    /// The member's mailbox.
    pub email: &'a str,
    /// Where Cronofy posts the outcome.
    pub callback_url: &'a str,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// calgate's sealed state (Cronofy may echo it).
    pub state: &'a str,
}

/// The body Cronofy posts to the callback URL.
#[derive(Debug, Deserialize)]
pub struct CallbackBody {
    /// The outcome.
    pub authorization: CallbackAuthorization,
}

/// Success (`code`, maybe `state`) or failure (`error`, `error_key`, no state).
#[derive(Debug, Deserialize)]
pub struct CallbackAuthorization {
    /// The member's authorization code.
    #[serde(default)]
    pub code: Option<SecretString>,
    /// The state sent with the request, when echoed.
    #[serde(default)]
    pub state: Option<String>,
    /// RFC 6749 error.
    #[serde(default)]
    pub error: Option<String>,
    /// Cronofy's machine-readable reason, e.g. `unable_to_grant_scope`.
    #[serde(default)]
    pub error_key: Option<String>,
}
