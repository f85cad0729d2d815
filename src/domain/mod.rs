//! calgate's domain: tenants, grants, states, events, and the operations on
//! them. Knows nothing of tonic or HTTP; talks to Cronofy through
//! [`crate::cronofy::CronofyClient`] and to the store through [`crate::store::Store`].

pub mod audit;
pub mod audit_chain;
pub mod changes;
pub mod error;
pub mod event;
pub mod event_ids;
pub mod grant;
pub mod profile;
pub mod reads;
mod refresh;
pub mod rules;
mod service;
pub(crate) mod single_flight;
pub mod state;
mod token_cache;
mod upstream;
mod usage;
pub mod write_errors;
pub mod write_gate;
pub mod write_queue;

pub use crate::clock::Clock;
pub use error::{Error, FieldViolation, FieldViolations, MAX_FIELD_VIOLATIONS, Violations};
pub use service::{
    Accepted, AuthorizeRequest, AuthorizeUrl, AvailabilityGroup, AvailabilityMember, AvailabilityRequest, BatchOp,
    CALLBACK_PATH, CallbackError, CallbackOutcome, ChangeReceiver, ChangeService, Channels, ConnectService,
    Credentials, Deadline, EnterpriseAuthorization, EnterpriseService, EnterpriseUserRequest, ErasureService,
    EventService, EventsDeletion, ExchangeRequest, Forgotten, FreeBusyQuery, MAX_BATCH_ITEMS, NOTIFICATION_PATH,
    NotificationOutcome, Purged, QueueService, Revoked, ServiceParts, Services, authorization_fingerprint,
    is_authorization_id,
};

use secrecy::SecretString;

/// Where an Enterprise Connect member authorization stands (as stored).
pub use crate::store::AuthorizationStatus;

use event_ids::EventIds;

use crate::{
    config::TenantSettings,
    cronofy::{DataCenter, Endpoints, OAuthApp},
};

/// A tenant at run time: one internal product with its own Cronofy application.
#[derive(Debug)]
pub struct Tenant {
    /// Stable id.
    pub id: String,
    /// Cronofy data centre.
    pub data_center: DataCenter,
    /// The Cronofy OAuth application.
    pub app: OAuthApp,
    /// Allowed redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Whether consent URLs ask Cronofy not to link accounts, by default.
    pub avoid_linking: bool,
    /// The secrets Cronofy may sign this application's callbacks with: the
    /// client secret, then a previous one being rotated out.
    pub callback_secrets: Vec<SecretString>,
    /// How the tenant's event ids become Cronofy's (stored, see [`event_ids`]).
    pub event_ids: EventIds,
    /// The other tenants configured with the same Cronofy application
    /// (`client_id` and data centre): Cronofy cannot tell them apart.
    pub app_siblings: Vec<String>,
}

impl Tenant {
    /// Builds a tenant from its settings.
    pub fn from_settings(settings: &TenantSettings) -> Tenant {
        Tenant {
            id: settings.id.clone(),
            data_center: settings.data_center,
            app: OAuthApp {
                client_id: settings.client_id.clone(),
                client_secret: settings.client_secret.clone(),
                endpoints: Endpoints::new(
                    settings.data_center,
                    settings.api_base_url.clone(),
                    settings.app_base_url.clone(),
                ),
            },
            avoid_linking: settings.avoid_linking,
            redirect_uris: settings.redirect_uris.clone(),
            callback_secrets: std::iter::once(settings.client_secret.clone())
                .chain(settings.previous_client_secret.clone())
                .collect(),
            event_ids: EventIds::Callers,
            app_siblings: Vec::new(),
        }
    }

    /// Whether other tenants share the tenant's Cronofy application.
    pub fn shares_application(&self) -> bool {
        !self.app_siblings.is_empty()
    }
}
