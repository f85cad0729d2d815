//! Enterprise Connect members: requested through the organisation's service
//! account, completed when Cronofy posts the outcome to calgate's callback.
//!
//! The authorization is recorded (pending) before Cronofy is asked, so a fast
//! callback always finds it. Cronofy's error callbacks carry no state: the
//! unguessable id in the callback URL is what finds the authorization, and a
//! state, when present, must be the one sealed for that id. The HTTP listener
//! admits only callbacks signed with the tenant application's client secret
//! (`Cronofy-HMAC-SHA256`). Exchanging the code is claimed with a
//! compare-and-set (`pending` → `exchanging`), so two callbacks for one
//! authorization exchange its code once, and a replay changes nothing. The
//! completion runs as a task of its own: a dropped connection cannot stop it
//! half-way. An authorization without a callback within
//! `callbacks.authorization_ttl` is EXPIRED. The id is never logged: knowing
//! it is half of what posting a callback takes.

use std::{sync::Arc, time::Duration};

use sha2::{Digest, Sha256};
use tracing::{info, warn};
use url::Url;

use super::{ConnectService, Credentials, Deadline, store_failure};
use crate::{
    clock::Clock, cronofy::CronofyClient, domain::state::StateCodec, resilience::Resilience, store::Store, tasks::Tasks,
};
use crate::{
    cronofy::{
        CronofyError,
        enterprise::{CallbackBody, MemberAuthorizationRequest},
    },
    domain::{
        Error, Tenant,
        audit::{Actor, AuditEntry, AuditKind},
        grant::{ConnectMode, Grant, GrantKind, GrantSelector},
        state::StateClaims,
        upstream,
    },
    resilience::GuardError,
    store::{AuthorizationRecord, AuthorizationStatus},
};

/// Enterprise Connect: member authorizations through a service account.
#[derive(Debug)]
pub struct EnterpriseService {
    pub(super) store: Store,
    pub(super) cronofy: CronofyClient,
    pub(super) resilience: Arc<Resilience>,
    pub(super) clock: Clock,
    pub(super) credentials: Arc<Credentials>,
    /// Turns a member's token response into a stored grant.
    pub(super) connect: Arc<ConnectService>,
    pub(super) states: Arc<StateCodec>,
    /// `callbacks.public_url`, when Enterprise Connect callbacks are configured.
    pub(super) callback_base: Option<url::Url>,
    /// How long a member authorization waits for its callback.
    pub(super) authorization_ttl: Duration,
    pub(super) tasks: Tasks,
}

/// The callback's path on `callbacks.listen`.
pub const CALLBACK_PATH: &str = "/cronofy/enterprise-connect/callback";
/// A claim on an authorization's exchange older than this belonged to a
/// replica that died mid-exchange; another callback may take it over.
const STALE_CLAIM: Duration = Duration::from_secs(300);

/// Whether `id` has the shape of the ids calgate makes (32 lowercase hex
/// digits): anything else is refused before the store is asked.
pub fn is_authorization_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How logs name an authorization: a digest of its id, never the id, which
/// is what lets a callback find it.
pub fn authorization_fingerprint(id: &str) -> String {
    hex::encode(&Sha256::digest(id.as_bytes())[..6])
}

/// A checked AuthorizeEnterpriseUser request.
#[derive(Debug, Clone)]
pub struct EnterpriseUserRequest {
    /// The organisation's service-account grant.
    pub service_account: GrantSelector,
    /// The member's mailbox.
    pub email: String,
    /// The caller's id for the member.
    pub user_ref: String,
    /// Scopes; empty means `free_busy_write`.
    pub scope: Vec<String>,
}

/// An authorization and, once completed, the member's grant.
#[derive(Debug, Clone)]
pub struct EnterpriseAuthorization {
    /// As stored.
    pub record: AuthorizationRecord,
    /// The member's grant when completed.
    pub grant: Option<Grant>,
}

/// How a callback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The member's grant is stored.
    Completed,
    /// Cronofy reported a failure, or the code was refused.
    Failed,
    /// The authorization had already finished, or another callback is
    /// exchanging its code: a replay, harmless.
    AlreadyFinished,
}

/// Why a callback was refused; the HTTP listener answers accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// No such authorization (404).
    #[error("unknown authorization")]
    Unknown,
    /// Not signed with the authorization's application secret (401).
    #[error("not signed by the authorization's Cronofy application")]
    Unsigned,
    /// The authorization waited longer than `callbacks.authorization_ttl` (410).
    #[error("the authorization expired")]
    Expired,
    /// Not a Cronofy callback, or a state that is not this authorization's (400).
    #[error("invalid callback: {0}")]
    Invalid(&'static str),
    /// Cronofy or the store failed; Cronofy may retry (503).
    #[error("temporarily unavailable")]
    Unavailable,
}

impl EnterpriseService {
    /// Records a pending authorization, then asks Cronofy to authorize the member.
    pub async fn authorize_enterprise_user(
        &self,
        tenant: &Arc<Tenant>,
        request: &EnterpriseUserRequest,
        deadline: Deadline,
    ) -> Result<EnterpriseAuthorization, Error> {
        let base = self.callback_base.as_ref().ok_or(Error::CallbacksNotConfigured)?;
        let service_account = self.credentials.find(tenant, &request.service_account).await?;
        if service_account.grant.kind != GrantKind::ServiceAccount {
            return Err(Error::GrantNotServiceAccount);
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        let callback_url = callback_url(base, &id);
        let now = self.clock.now();
        let state = self.states.seal(&StateClaims {
            tenant: tenant.id.clone(),
            data_center: tenant.data_center.to_string(),
            redirect_uri: callback_url.clone(),
            connect_mode: ConnectMode::Enterprise.to_string(),
            user_ref: Some(request.user_ref.clone()),
            nonce: id.clone(),
            expires_at: (now + self.authorization_ttl).unix_timestamp(),
        });
        let scope = if request.scope.is_empty() {
            "free_busy_write".to_owned()
        } else {
            request.scope.join(" ")
        };
        let record = AuthorizationRecord {
            id: id.clone(),
            tenant_id: tenant.id.clone(),
            service_account_sub: service_account.grant.sub.clone(),
            email: request.email.clone(),
            user_ref: request.user_ref.clone(),
            scope: scope.clone(),
            callback_url: callback_url.clone(),
            status: AuthorizationStatus::Pending,
            error_key: None,
            grant_sub: None,
            created_at: now.unix_timestamp(),
            updated_at: now.unix_timestamp(),
        };
        self.store
            .create_authorization(&record)
            .await
            .map_err(|error| store_failure(&tenant.id, "recording an authorization", &error))?;
        let body = MemberAuthorizationRequest {
            email: &request.email,
            callback_url: &callback_url,
            scope: &scope,
            state: &state,
        };
        let selector = GrantSelector::Sub(service_account.grant.sub.clone());
        let asked: Result<(), Error> = async {
            let lease = self.credentials.access_token(tenant, &selector, false).await?;
            call_with_refresh!(
                self,
                tenant,
                deadline,
                lease,
                upstream::Call::other("service account"),
                |token| { self.cronofy.authorize_member(&tenant.app.endpoints, token, &body) }
            )
        }
        .await;
        if let Err(error) = asked {
            let _ = self
                .store
                .finish_authorization(&id, AuthorizationStatus::Failed, Some("request_failed"), None)
                .await;
            return Err(error);
        }
        info!(tenant = %tenant.id, authorization = %authorization_fingerprint(&id), "enterprise member authorization requested");
        Ok(EnterpriseAuthorization { record, grant: None })
    }

    /// A tenant's authorization; another tenant's is not found.
    pub async fn get_enterprise_authorization(
        &self,
        tenant: &Tenant,
        id: &str,
    ) -> Result<EnterpriseAuthorization, Error> {
        let mut record = self
            .store
            .find_authorization(id)
            .await
            .map_err(|error| store_failure(&tenant.id, "reading an authorization", &error))?
            .filter(|record| record.tenant_id == tenant.id)
            .ok_or(Error::AuthorizationNotFound)?;
        if self.outlived_its_ttl(&record) {
            // Reported as it is; recorded when the store will take it.
            record.status = AuthorizationStatus::Expired;
            if let Err(error) = self.store.expire_authorization(id, self.expired_before()).await {
                warn!(tenant = %tenant.id, %error, "recording an expired authorization failed");
            }
        }
        let grant = match &record.grant_sub {
            Some(sub) => {
                let mut grant = self
                    .credentials
                    .find(tenant, &GrantSelector::Sub(sub.clone()))
                    .await?
                    .grant;
                grant.user_ref = Some(record.user_ref.clone());
                Some(grant)
            }
            None => None,
        };
        Ok(EnterpriseAuthorization { record, grant })
    }

    /// Handles Cronofy's callback for authorization `id`, already found to be
    /// signed by the applications of `signed_by`. Runs as a task of its own, so
    /// a dropped connection cannot stop an exchange half-way.
    pub async fn complete_enterprise_callback(
        self: &Arc<Self>,
        signed_by: Vec<Arc<Tenant>>,
        id: String,
        body: Vec<u8>,
    ) -> Result<CallbackOutcome, CallbackError> {
        let this = self.clone();
        self.tasks
            .spawn(async move { this.complete_callback(&signed_by, &id, &body).await })
            .await
            .unwrap_or_else(|joined| {
                tracing::error!(error = %joined, "an Enterprise Connect callback died");
                Err(CallbackError::Unavailable)
            })
    }

    async fn complete_callback(
        &self,
        signed_by: &[Arc<Tenant>],
        id: &str,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        let record = self
            .store
            .find_authorization(id)
            .await
            .map_err(|error| {
                warn!(%error, "reading an authorization for its callback failed");
                CallbackError::Unavailable
            })?
            .ok_or(CallbackError::Unknown)?;
        let tenant = signed_by
            .iter()
            .find(|tenant| tenant.id == record.tenant_id)
            .ok_or(CallbackError::Unsigned)?;
        let outcome = self.complete_for_tenant(tenant, &record, id, body).await;
        if let Err(refused @ (CallbackError::Invalid(_) | CallbackError::Expired)) = &outcome {
            // Signed by the tenant's application and about its authorization:
            // worth an audit row (unsigned or unknown ones are not, or anyone could fill the trail).
            let entry = AuditEntry {
                kind: AuditKind::CallbackRefused,
                sub: None,
                user_ref: Some(&record.user_ref),
                actor: &Actor::cronofy(),
                detail: format!("authorization {}: {refused}", authorization_fingerprint(id)),
                ids_erased: false,
            };
            if let Err(error) = self.store.record_audit(&tenant.id, &entry).await {
                warn!(tenant = %tenant.id, %error, "recording a refused callback in the audit trail failed");
            }
        }
        outcome
    }

    async fn complete_for_tenant(
        &self,
        tenant: &Tenant,
        record: &AuthorizationRecord,
        id: &str,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        let body: CallbackBody =
            serde_json::from_slice(body).map_err(|_| CallbackError::Invalid("not a Cronofy callback"))?;
        if let Some(state) = &body.authorization.state {
            let claims = self.states.open(state).ok_or(CallbackError::Invalid("state"))?;
            if claims.nonce != record.id || claims.tenant != record.tenant_id {
                return Err(CallbackError::Invalid("state"));
            }
        }
        let fingerprint = authorization_fingerprint(id);
        match record.status {
            AuthorizationStatus::Pending | AuthorizationStatus::Exchanging => {}
            AuthorizationStatus::Completed | AuthorizationStatus::Failed => {
                return Ok(CallbackOutcome::AlreadyFinished);
            }
            AuthorizationStatus::Expired => return Err(CallbackError::Expired),
        }
        if self.outlived_its_ttl(record) {
            let _ = self.store.expire_authorization(id, self.expired_before()).await;
            warn!(tenant = %tenant.id, authorization = %fingerprint, "a callback came after the authorization expired");
            return Err(CallbackError::Expired);
        }
        let Some(code) = body.authorization.code else {
            let error_key = body
                .authorization
                .error_key
                .or(body.authorization.error)
                .map(|key| printable_key(&key))
                .unwrap_or_else(|| "unknown".into());
            warn!(tenant = %tenant.id, authorization = %fingerprint, %error_key, "Cronofy could not authorize the member");
            self.finish(id, AuthorizationStatus::Failed, Some(&error_key), None)
                .await?;
            return Ok(CallbackOutcome::Failed);
        };
        let stale_before = (self.clock.now() - STALE_CLAIM).unix_timestamp();
        let claimed = self
            .store
            .claim_authorization(id, stale_before)
            .await
            .map_err(|error| {
                warn!(tenant = %tenant.id, %error, "claiming an authorization failed");
                CallbackError::Unavailable
            })?;
        if !claimed {
            // Another callback is exchanging this code, or has finished.
            return Ok(CallbackOutcome::AlreadyFinished);
        }
        let exchanged = self
            .resilience
            .call(&tenant.id, None, || {
                self.cronofy.exchange_code(&tenant.app, &code, &record.callback_url)
            })
            .await;
        let response = match exchanged {
            Ok(response) => response,
            Err(GuardError::Upstream(CronofyError::InvalidGrant)) => {
                self.finish(id, AuthorizationStatus::Failed, Some("invalid_grant"), None)
                    .await?;
                return Ok(CallbackOutcome::Failed);
            }
            Err(failure) => {
                warn!(tenant = %tenant.id, authorization = %fingerprint, error = %upstream::guard_error(failure, upstream::Call::other("authorization")), "member code exchange failed");
                let _ = self.store.release_authorization(id).await;
                return Err(CallbackError::Unavailable);
            }
        };
        let new = match self.connect.new_grant(response, ConnectMode::Enterprise) {
            Ok(new) => new,
            Err(error) => {
                warn!(tenant = %tenant.id, authorization = %fingerprint, %error, "Cronofy's answer to a member's code is unusable");
                let _ = self.store.release_authorization(id).await;
                return Err(CallbackError::Unavailable);
            }
        };
        let stored = match self
            .connect
            .save_with_retries(tenant, &new, Some(&record.user_ref), &Actor::cronofy())
            .await
        {
            Ok(stored) => stored,
            Err(_) => {
                let _ = self.store.release_authorization(id).await;
                return Err(CallbackError::Unavailable);
            }
        };
        self.finish(id, AuthorizationStatus::Completed, None, Some(&stored.grant.sub))
            .await?;
        info!(tenant = %tenant.id, authorization = %fingerprint, sub = %stored.grant.sub, "enterprise member connected");
        Ok(CallbackOutcome::Completed)
    }

    /// Whether a pending authorization waited longer than `callbacks.authorization_ttl`.
    fn outlived_its_ttl(&self, record: &AuthorizationRecord) -> bool {
        record.status == AuthorizationStatus::Pending && record.created_at < self.expired_before()
    }

    /// Authorizations created before this instant (unix seconds) have expired.
    fn expired_before(&self) -> i64 {
        (self.clock.now() - self.authorization_ttl).unix_timestamp()
    }

    async fn finish(
        &self,
        id: &str,
        status: AuthorizationStatus,
        error_key: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), CallbackError> {
        self.store
            .finish_authorization(id, status, error_key, sub)
            .await
            .map(drop)
            .map_err(|error| {
                warn!(%error, "finishing an authorization failed");
                CallbackError::Unavailable
            })
    }
}

/// Cronofy's error key as calgate keeps and logs it: at most 64 characters
/// of `[A-Za-z0-9_.-]`, anything else replaced, so a hostile callback cannot
/// write control characters into a log line or an answer.
fn printable_key(key: &str) -> String {
    key.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `{public_url}/cronofy/enterprise-connect/callback?authorization=<id>`.
fn callback_url(base: &Url, id: &str) -> String {
    let mut url = base.clone();
    url.set_path(&format!("{}{CALLBACK_PATH}", base.path().trim_end_matches('/')));
    url.query_pairs_mut().append_pair("authorization", id);
    url.into()
}
