//! Enterprise Connect members: requested through the organisation's service
//! account, completed when Cronofy posts the outcome to calgate's callback.
//!
//! The authorization is recorded (pending) before Cronofy is asked, so a fast
//! callback always finds it. Cronofy's error callbacks carry no state: the
//! unguessable id in the callback URL is what finds the authorization, and a
//! state, when present, must be the one sealed for that id. Completing is a
//! compare-and-set on `pending`, so a replayed callback changes nothing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tracing::{info, warn};
use url::Url;

use super::{CalendarService, Deadline};
use crate::{
    cronofy::{
        CronofyError,
        enterprise::{CallbackBody, MemberAuthorizationRequest},
    },
    domain::{
        Error, Tenant,
        grant::{ConnectMode, Grant, GrantKind, GrantSelector},
        state::StateClaims,
        upstream,
    },
    resilience::GuardError,
    store::AuthorizationRecord,
};

/// The callback's path on `callbacks.listen`.
pub const CALLBACK_PATH: &str = "/cronofy/enterprise-connect/callback";
/// How long a member authorization's state is honoured.
const AUTHORIZATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// The authorization had already finished: a replay, harmless.
    AlreadyFinished,
}

/// Why a callback was refused; the HTTP listener answers accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    /// No such authorization (404).
    #[error("unknown authorization")]
    Unknown,
    /// Not a Cronofy callback, or a state that is not this authorization's (400).
    #[error("invalid callback: {0}")]
    Invalid(&'static str),
    /// Cronofy or the store failed; Cronofy may retry (503).
    #[error("temporarily unavailable")]
    Unavailable,
}

impl CalendarService {
    /// Records a pending authorization, then asks Cronofy to authorize the member.
    pub async fn authorize_enterprise_user(
        &self,
        tenant: &Arc<Tenant>,
        request: &EnterpriseUserRequest,
        deadline: Deadline,
    ) -> Result<EnterpriseAuthorization, Error> {
        let base = self.callback_base.as_ref().ok_or(Error::CallbacksNotConfigured)?;
        let service_account = self.find(tenant, &request.service_account).await?;
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
            expires_at: (now + AUTHORIZATION_TTL).unix_timestamp(),
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
            status: "pending".into(),
            error_key: None,
            grant_sub: None,
            created_at: now.unix_timestamp(),
            updated_at: now.unix_timestamp(),
        };
        self.store
            .create_authorization(&record)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        let body = MemberAuthorizationRequest {
            email: &request.email,
            callback_url: &callback_url,
            scope: &scope,
            state: &state,
        };
        let selector = GrantSelector::Sub(service_account.grant.sub.clone());
        let asked: Result<(), Error> = async {
            let lease = self.access_token(tenant, &selector, false).await?;
            call_with_refresh!(self, tenant, deadline, lease, "", |token| {
                self.cronofy.authorize_member(&tenant.app.endpoints, token, &body)
            })
        }
        .await;
        if let Err(error) = asked {
            let _ = self
                .store
                .finish_authorization(&id, "failed", Some("request_failed"), None)
                .await;
            return Err(error);
        }
        info!(tenant = %tenant.id, authorization = %id, "enterprise member authorization requested");
        Ok(EnterpriseAuthorization { record, grant: None })
    }

    /// A tenant's authorization; another tenant's is not found.
    pub async fn get_enterprise_authorization(
        &self,
        tenant: &Tenant,
        id: &str,
    ) -> Result<EnterpriseAuthorization, Error> {
        let record = self
            .store
            .find_authorization(id)
            .await
            .map_err(|_| Error::StoreUnavailable)?
            .filter(|record| record.tenant_id == tenant.id)
            .ok_or(Error::AuthorizationNotFound)?;
        let grant = match &record.grant_sub {
            Some(sub) => {
                let mut grant = self.find(tenant, &GrantSelector::Sub(sub.clone())).await?.grant;
                grant.user_ref = Some(record.user_ref.clone());
                Some(grant)
            }
            None => None,
        };
        Ok(EnterpriseAuthorization { record, grant })
    }

    /// Handles Cronofy's callback for authorization `id`.
    pub async fn complete_enterprise_callback(
        &self,
        tenants: &HashMap<String, Arc<Tenant>>,
        id: &str,
        body: &[u8],
    ) -> Result<CallbackOutcome, CallbackError> {
        let record = self
            .store
            .find_authorization(id)
            .await
            .map_err(|_| CallbackError::Unavailable)?
            .ok_or(CallbackError::Unknown)?;
        let body: CallbackBody =
            serde_json::from_slice(body).map_err(|_| CallbackError::Invalid("not a Cronofy callback"))?;
        if let Some(state) = &body.authorization.state {
            let claims = self.states.open(state).ok_or(CallbackError::Invalid("state"))?;
            if claims.nonce != record.id || claims.tenant != record.tenant_id {
                return Err(CallbackError::Invalid("state"));
            }
        }
        if record.status != "pending" {
            return Ok(CallbackOutcome::AlreadyFinished);
        }
        let tenant = tenants.get(&record.tenant_id).ok_or(CallbackError::Unknown)?;
        let Some(code) = body.authorization.code else {
            let error_key = body
                .authorization
                .error_key
                .or(body.authorization.error)
                .unwrap_or_else(|| "unknown".into());
            warn!(tenant = %tenant.id, authorization = %id, %error_key, "Cronofy could not authorize the member");
            self.finish(id, "failed", Some(&error_key), None).await?;
            return Ok(CallbackOutcome::Failed);
        };
        let exchanged = self
            .resilience
            .call(&tenant.id, None, || {
                self.cronofy.exchange_code(&tenant.app, &code, &record.callback_url)
            })
            .await;
        let response = match exchanged {
            Ok(response) => response,
            Err(GuardError::Upstream(CronofyError::InvalidGrant)) => {
                self.finish(id, "failed", Some("invalid_grant"), None).await?;
                return Ok(CallbackOutcome::Failed);
            }
            Err(failure) => {
                warn!(tenant = %tenant.id, authorization = %id, error = %upstream::guard_error(failure, ""), "member code exchange failed");
                return Err(CallbackError::Unavailable);
            }
        };
        let new = self
            .new_grant(response, ConnectMode::Enterprise)
            .map_err(|_| CallbackError::Unavailable)?;
        let stored = self
            .save_with_retries(tenant, &new, Some(&record.user_ref))
            .await
            .map_err(|_| CallbackError::Unavailable)?;
        self.finish(id, "completed", None, Some(&stored.grant.sub)).await?;
        info!(tenant = %tenant.id, authorization = %id, sub = %stored.grant.sub, "enterprise member connected");
        Ok(CallbackOutcome::Completed)
    }

    async fn finish(
        &self,
        id: &str,
        status: &str,
        error_key: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), CallbackError> {
        self.store
            .finish_authorization(id, status, error_key, sub)
            .await
            .map(drop)
            .map_err(|_| CallbackError::Unavailable)
    }
}

/// `{public_url}/cronofy/enterprise-connect/callback?authorization=<id>`.
fn callback_url(base: &Url, id: &str) -> String {
    let mut url = base.clone();
    url.set_path(&format!("{}{CALLBACK_PATH}", base.path().trim_end_matches('/')));
    url.query_pairs_mut().append_pair("authorization", id);
    url.into()
}
