//! Connecting users: consent URLs, code exchange, grants, revocation.

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{Channels, Credentials, store_failure};
use crate::{
    clock::Clock, cronofy::CronofyClient, domain::single_flight::SingleFlight, resilience::Resilience, store::Store,
    tasks::Tasks,
};
use crate::{
    cronofy::{CronofyError, Host, TokenResponse},
    domain::{
        Error, Tenant, Violations,
        audit::Actor,
        grant::{AccessMode, ConnectMode, Grant, GrantKind, GrantSelector, StoredGrant, Tokens},
        state::{StateClaims, StateCodec},
        upstream,
    },
    resilience::GuardError,
    store::NewGrant,
};

/// Default scope of Individual Connect: Read-Write access mode.
const INDIVIDUAL_SCOPE: &str = "free_busy_write";
/// Default scope of Enterprise Connect's admin consent.
const ENTERPRISE_SCOPE: &str = "service_account/accounts/manage";

/// A checked BuildAuthorizeUrl request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// Where Cronofy sends the user back.
    pub redirect_uri: String,
    /// Requested scopes; empty means the mode's default.
    pub scope: Vec<String>,
    /// Individual or enterprise.
    pub connect_mode: ConnectMode,
    /// Enterprise only; empty means `free_busy_write`.
    pub delegated_scope: Vec<String>,
    /// The caller's id for the user.
    pub user_ref: Option<String>,
    /// Pre-selected provider.
    pub provider_name: Option<String>,
    /// Whether Cronofy must not link this account to others authorized from
    /// the same browser; None means the tenant's default.
    pub avoid_linking: Option<bool>,
    /// Explicit account link.
    pub link_token: Option<String>,
    /// Consent page language.
    pub locale: Option<String>,
}

/// The URL to open and the state inside it.
#[derive(Debug, Clone)]
pub struct AuthorizeUrl {
    /// Consent URL.
    pub url: String,
    /// Sealed state.
    pub state: String,
    /// When the state expires.
    pub state_expires_at: OffsetDateTime,
}

/// How Cronofy's ids of Enterprise Connect service accounts begin.
const SERVICE_ACCOUNT_PREFIX: &str = "ser_";

/// Connecting users (authorize URL, code exchange), describing and revoking grants.
#[derive(Debug)]
pub struct ConnectService {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) clock: Clock,
    pub(super) credentials: Arc<Credentials>,
    pub(super) channels: Arc<Channels>,
    pub(super) states: Arc<StateCodec>,
    pub(super) state_ttl: Duration,
    pub(super) tasks: Tasks,
    /// Code exchanges in flight, by (tenant, state nonce): the code's SHA-256
    /// and the shared outcome.
    pub(super) exchanges: SingleFlight<(String, String), Result<Grant, Error>, String>,
}

/// A checked ExchangeCode request.
#[derive(Debug)]
pub struct ExchangeRequest {
    /// The authorization code.
    pub code: SecretString,
    /// The redirect URI used for the authorization.
    pub redirect_uri: String,
    /// The state returned with the code.
    pub state: String,
    /// The user_ref of the browser session the redirect came to, when the caller says.
    pub expected_user_ref: Option<String>,
}

impl ConnectService {
    /// Builds the consent URL and its sealed, single-use state. Calls nobody.
    pub fn build_authorize_url(&self, tenant: &Tenant, request: AuthorizeRequest) -> Result<AuthorizeUrl, Error> {
        let mut violations = Violations::default();
        if !tenant
            .redirect_uris
            .iter()
            .any(|allowed| allowed == &request.redirect_uri)
        {
            violations.add("redirect_uri", "is not one of the tenant's configured redirect_uris");
        }
        if request.connect_mode == ConnectMode::Individual && !request.delegated_scope.is_empty() {
            violations.add("delegated_scope", "is only valid with CONNECT_MODE_ENTERPRISE");
        }
        if request.link_token.is_some() && request.avoid_linking == Some(true) {
            violations.add(
                "allow_linking",
                "must not be false with link_token: an explicit link links the account",
            );
        }
        violations.finish()?;

        let expires_at = self.clock.now() + self.state_ttl;
        let state = self.states.seal(&StateClaims {
            tenant: tenant.id.clone(),
            data_center: tenant.data_center.to_string(),
            redirect_uri: request.redirect_uri.clone(),
            connect_mode: request.connect_mode.to_string(),
            user_ref: request.user_ref.clone(),
            nonce: StateCodec::new_nonce(),
            expires_at: expires_at.unix_timestamp(),
        });
        let (path, default_scope): (&[&str], &str) = match request.connect_mode {
            ConnectMode::Individual => (&["oauth", "authorize"], INDIVIDUAL_SCOPE),
            ConnectMode::Enterprise => (&["enterprise_connect", "oauth", "authorize"], ENTERPRISE_SCOPE),
        };
        let scope = if request.scope.is_empty() {
            default_scope.to_owned()
        } else {
            request.scope.join(" ")
        };
        let mut url = tenant.app.endpoints.url(Host::App, path);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &tenant.app.client_id)
                .append_pair("redirect_uri", &request.redirect_uri)
                .append_pair("scope", &scope)
                .append_pair("state", &state);
            if request.connect_mode == ConnectMode::Enterprise {
                let delegated = if request.delegated_scope.is_empty() {
                    INDIVIDUAL_SCOPE.to_owned()
                } else {
                    request.delegated_scope.join(" ")
                };
                query.append_pair("delegated_scope", &delegated);
            }
            if let Some(provider) = &request.provider_name {
                query.append_pair("provider_name", provider);
            }
            // Cronofy links accounts authorized from one browser unless told
            // not to: two users sharing a sub would share a revoke. An
            // explicit link (link_token) is the caller's choice to link.
            if request.link_token.is_none() && request.avoid_linking.unwrap_or(tenant.avoid_linking) {
                query.append_pair("avoid_linking", "true");
            }
            if let Some(link_token) = &request.link_token {
                query.append_pair("link_token", link_token);
            }
            if let Some(locale) = &request.locale {
                query.append_pair("locale", locale);
            }
        }
        Ok(AuthorizeUrl {
            url: url.into(),
            state,
            state_expires_at: expires_at,
        })
    }

    /// Checks the state, redeems the code at Cronofy and stores the grant.
    ///
    /// Once the state is accepted, the redemption runs as a task of its own
    /// (claim → Cronofy's token call → save): a caller that gives up half-way
    /// cannot lose the grant Cronofy issued. Retrying with the same code and
    /// state joins the redemption in flight, or is given the grant it stored.
    pub async fn exchange_code(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        request: ExchangeRequest,
        actor: Actor,
    ) -> Result<Grant, Error> {
        let claims = self.check_state(tenant, &request)?;
        let code_sha256 = hex::encode(Sha256::digest(request.code.expose_secret().as_bytes()));
        let key = (tenant.id.clone(), claims.nonce.clone());
        let (this, tenant) = (self.clone(), tenant.clone());
        let digest = code_sha256.clone();
        let work = async move { this.redeem(&tenant, claims, request, &digest, &actor).await };
        let (flight, started_with) = self
            .exchanges
            .join_or_start(key, code_sha256.clone(), &self.tasks, work, || {
                Err(Error::UpstreamUnavailable { retry_after: None })
            });
        // The same state with another code: the state was used already.
        if started_with != code_sha256 {
            return Err(Error::StateInvalid("already used"));
        }
        flight.await
    }

    /// The state's claims, when it is calgate's, this tenant's, unexpired and
    /// for this redirect URI. Calls nobody.
    fn check_state(&self, tenant: &Tenant, request: &ExchangeRequest) -> Result<StateClaims, Error> {
        let claims = self
            .states
            .open(&request.state)
            .ok_or(Error::StateInvalid("not issued by calgate or altered"))?;
        if claims.tenant != tenant.id {
            // Another tenant's state: indistinguishable from an unknown one.
            return Err(Error::GrantNotFound);
        }
        if claims.is_expired(self.clock.now()) {
            return Err(Error::StateExpired);
        }
        if claims.redirect_uri != request.redirect_uri {
            return Err(Error::StateInvalid("issued for another redirect_uri"));
        }
        if claims.data_center != tenant.data_center.as_str() {
            return Err(Error::StateInvalid("issued for another data centre"));
        }
        // Checked before the nonce is claimed: a mismatch leaves the state usable by its own user.
        if let Some(expected) = &request.expected_user_ref
            && claims.user_ref.as_ref() != Some(expected)
        {
            return Err(Error::StateUserMismatch);
        }
        Ok(claims)
    }

    /// Claims the state's nonce, exchanges the code and stores the grant. Runs
    /// as its own task; Cronofy's answer is bounded by the retry ceiling, not
    /// by a caller who may already have gone.
    async fn redeem(
        &self,
        tenant: &Tenant,
        claims: StateClaims,
        request: ExchangeRequest,
        code_sha256: &str,
        actor: &Actor,
    ) -> Result<Grant, Error> {
        let connect_mode =
            ConnectMode::parse(&claims.connect_mode).ok_or(Error::StateInvalid("unknown connect mode"))?;
        let expires_at =
            OffsetDateTime::from_unix_timestamp(claims.expires_at).map_err(|_| Error::StateInvalid("bad expiry"))?;
        let claimed = self
            .store
            .claim_state_nonce(&tenant.id, &claims.nonce, expires_at)
            .await
            .map_err(|error| store_failure(&tenant.id, "claiming a state", &error))?;
        if !claimed {
            // Redeemed before: by this very code (a caller retrying after giving up) or not.
            let earlier = self
                .store
                .state_outcome(&tenant.id, &claims.nonce, code_sha256)
                .await
                .map_err(|error| store_failure(&tenant.id, "reading a state's outcome", &error))?;
            return match earlier {
                Some(sub) => Ok(self.credentials.find(tenant, &GrantSelector::Sub(sub)).await?.grant),
                None => Err(Error::StateInvalid("already used")),
            };
        }

        let answer = self
            .resilience
            .call(&tenant.id, None, || {
                self.cronofy
                    .exchange_code(&tenant.app, &request.code, &request.redirect_uri)
            })
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(failure) => {
                warn!(tenant = %tenant.id, ?failure, "code exchange failed");
                let code_spent = matches!(failure, GuardError::Upstream(CronofyError::InvalidGrant));
                if !code_spent {
                    // Cronofy did not (knowingly) take the code: let the caller retry with the same state.
                    let _ = self.store.release_state_nonce(&tenant.id, &claims.nonce).await;
                }
                return Err(upstream::exchange_error(failure));
            }
        };
        let new = self.new_grant(response, connect_mode)?;
        let stored = self
            .save_with_retries(tenant, &new, claims.user_ref.as_deref(), actor)
            .await?;
        if let Err(error) = self
            .store
            .record_state_outcome(&tenant.id, &claims.nonce, code_sha256, &stored.grant.sub)
            .await
        {
            // The grant is stored; only a retry of this exchange would now see STATE_INVALID.
            warn!(tenant = %tenant.id, %error, "recording a state's outcome failed");
        }
        info!(tenant = %tenant.id, sub = %stored.grant.sub, kind = %stored.grant.kind, "grant connected");
        Ok(stored.grant)
    }

    /// The grant a token response describes, ready to store.
    pub(super) fn new_grant(&self, response: TokenResponse, connect_mode: ConnectMode) -> Result<NewGrant, Error> {
        let unexpected = || Error::UpstreamRefused("Cronofy's token response lacks an account or refresh token");
        // A service account is named by `service_account_id`, or only by its
        // `ser_` sub (an assumption, docs/cronofy-mapping.md): taken for a
        // user, its grant would accept event writes Cronofy cannot hold.
        let service_account = response.service_account_id.is_some()
            || response
                .sub
                .as_deref()
                .is_some_and(|sub| sub.starts_with(SERVICE_ACCOUNT_PREFIX));
        let kind = if service_account {
            GrantKind::ServiceAccount
        } else {
            GrantKind::User
        };
        let sub = response
            .sub
            .clone()
            .or_else(|| response.service_account_id.clone())
            .or_else(|| response.account_id.clone())
            .ok_or_else(unexpected)?;
        let profile = response.linked_profile();
        let refresh_token = response.refresh_token.ok_or_else(unexpected)?;
        let (provider_name, provider_service) = profile.provider();
        let access_mode = AccessMode::of_provider(provider_name, provider_service);
        Ok(NewGrant {
            // Push notifications need the callback listener; service accounts have no calendar.
            track_changes: self.channels.listener_configured() && kind == GrantKind::User,
            account_id: response.account_id.unwrap_or_else(|| sub.clone()),
            sub,
            scope: response.scope.split_whitespace().map(str::to_owned).collect(),
            connect_mode,
            kind,
            free_busy_mode: access_mode.writes_as_invites(),
            // No-Access mode is known by this name when stored (see Grant::access_mode).
            provider_name: if access_mode == AccessMode::NoAccess {
                "cronofy".to_owned()
            } else {
                profile.provider_name.unwrap_or_default()
            },
            profile_name: profile.profile_name.unwrap_or_default(),
            tokens: Tokens {
                access_token: response.access_token,
                refresh_token,
                access_expires_at: self.clock.now() + time::Duration::seconds(i64::from(response.expires_in)),
            },
        })
    }

    pub(super) async fn save_with_retries(
        &self,
        tenant: &Tenant,
        new: &NewGrant,
        user_ref: Option<&str>,
        actor: &Actor,
    ) -> Result<StoredGrant, Error> {
        // The code is spent: losing these tokens means asking the user to consent again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.save_grant(&tenant.id, new, user_ref, actor).await {
                Ok(stored) => {
                    if new.track_changes {
                        self.channels.mark_due();
                    }
                    self.credentials.tokens.forget_grant(&tenant.id, &new.sub);
                    if let Some(user_ref) = user_ref {
                        self.credentials.tokens.forget_user_ref(&tenant.id, user_ref);
                    }
                    return Ok(stored);
                }
                Err(error) if attempt < 3 => {
                    warn!(tenant = %tenant.id, %error, attempt, "storing a new grant failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(error) => {
                    tracing::error!(tenant = %tenant.id, %error, "a new grant could not be stored; the user must connect again");
                    return Err(Error::StoreUnavailable);
                }
            }
        }
    }

    /// Describes a grant.
    pub async fn get_grant(&self, tenant: &Tenant, selector: &GrantSelector) -> Result<Grant, Error> {
        Ok(self.credentials.find(tenant, selector).await?.grant)
    }
}
