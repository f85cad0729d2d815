//! Revoking grants, fail-safe: the grant is REVOKED and its tokens erased
//! here whatever Cronofy answers; a revoke Cronofy did not take is queued in
//! the store and retried by a background worker ([`ConnectService::retry_revocations`]).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{ConnectService, Deadline, store_failure};
use crate::{
    cronofy::CronofyError,
    domain::{
        Error, Tenant,
        audit::Actor,
        grant::{Grant, GrantSelector, GrantStatus},
        upstream,
    },
    resilience::GuardError,
    telemetry::metrics::METRICS,
};

/// Revocations retried per worker round.
const BATCH: i64 = 50;
/// Longest pause between two attempts at one revocation.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What happened to an authorization at Cronofy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamRevoke {
    /// Revoked (or Cronofy no longer knew it).
    Revoked,
    /// Cronofy's revoke failed: queued and retried in the background.
    Queued,
    /// Not asked: another tenant of the application holds the account.
    LeftToOtherTenants,
}

impl UpstreamRevoke {
    /// How the audit trail and logs name it.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamRevoke::Revoked => "revoked",
            UpstreamRevoke::Queued => "pending",
            UpstreamRevoke::LeftToOtherTenants => "left to the application's other tenants",
        }
    }
}

/// A revoked grant, and whether Cronofy's side is still to be done.
#[derive(Debug, Clone)]
pub struct Revoked {
    /// The grant, now revoked.
    pub grant: Grant,
    /// Cronofy's revoke failed and is retried in the background.
    pub upstream_pending: bool,
}

impl ConnectService {
    /// Revokes the grant at Cronofy (by sub) and erases its tokens; the grant
    /// stays visible as revoked. When Cronofy's revoke fails, the local revoke
    /// happens anyway and Cronofy's is retried in the background. While
    /// another tenant of the application holds the account, Cronofy is not
    /// asked at all ([`Self::revoke_upstream`]). Revoking a revoked grant
    /// changes nothing.
    pub async fn revoke_grant(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        deadline: Deadline,
        actor: &Actor,
    ) -> Result<Revoked, Error> {
        let stored = self.credentials.find(tenant, selector).await?;
        if stored.grant.status == GrantStatus::Revoked {
            return Ok(Revoked {
                grant: stored.grant,
                upstream_pending: false,
            });
        }
        let sub = stored.grant.sub.clone();
        self.channels.close_grant_channel(tenant, &sub).await?;
        let upstream = self.revoke_upstream(tenant, &sub, deadline).await?;
        let upstream_pending = upstream == UpstreamRevoke::Queued;
        let mut grant = self
            .store
            .revoke_grant(
                &tenant.id,
                &sub,
                actor,
                format!("upstream revoke: {}", upstream.as_str()),
            )
            .await
            .map_err(|error| store_failure(&tenant.id, "revoking a grant", &error))?
            .ok_or(Error::GrantNotFound)?
            .grant;
        self.credentials.tokens.forget_grant(&tenant.id, &sub);
        if let GrantSelector::UserRef(user_ref) = selector {
            grant.user_ref = Some(user_ref.clone());
        }
        info!(tenant = %tenant.id, sub, upstream_pending, "grant revoked");
        Ok(Revoked {
            grant,
            upstream_pending,
        })
    }

    /// Revokes the grant at Cronofy by sub — unless another tenant of the
    /// application holds a grant for the account: Cronofy's docs do not say
    /// whether a revoke ends one token's authorization or the account's, so
    /// calgate assumes the account's and leaves the revoke to the last tenant
    /// to let go. A revoke that fails is queued for the revocation worker
    /// (queued before anything is erased, so a crash still revokes at Cronofy).
    pub(super) async fn revoke_upstream(
        &self,
        tenant: &Tenant,
        sub: &str,
        deadline: Deadline,
    ) -> Result<UpstreamRevoke, Error> {
        if self.held_by_another_tenant(tenant, sub).await? {
            info!(tenant = %tenant.id, sub, "another tenant of the application holds the account: not revoked at Cronofy");
            return Ok(UpstreamRevoke::LeftToOtherTenants);
        }
        let revoked = self
            .resilience
            .call(&tenant.id, deadline, || self.cronofy.revoke_by_sub(&tenant.app, sub))
            .await;
        match revoked {
            // Cronofy no longer knows the authorization: it is revoked either way.
            Ok(()) | Err(GuardError::Upstream(CronofyError::InvalidGrant)) => Ok(UpstreamRevoke::Revoked),
            Err(failure) => {
                let error = upstream::guard_error(failure, upstream::Call::other("authorization"));
                warn!(tenant = %tenant.id, sub, %error, "Cronofy's revoke failed; retrying it in the background");
                self.store
                    .queue_revocation(&tenant.id, sub)
                    .await
                    .map_err(|error| store_failure(&tenant.id, "queueing a revocation", &error))?;
                Ok(UpstreamRevoke::Queued)
            }
        }
    }

    /// Whether another tenant of the tenant's Cronofy application holds a
    /// live grant for the account.
    async fn held_by_another_tenant(&self, tenant: &Tenant, sub: &str) -> Result<bool, Error> {
        if !tenant.shares_application() {
            return Ok(false);
        }
        self.store
            .account_held_by(&tenant.app_siblings, sub)
            .await
            .map_err(|error| store_failure(&tenant.id, "looking for the account's other grants", &error))
    }

    /// Revokes one calendar profile of the grant's account at Cronofy (Revoke
    /// Profile), leaving the grant and its other profiles connected.
    pub async fn revoke_profile(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        profile_id: &str,
        deadline: Deadline,
    ) -> Result<Grant, Error> {
        let lease = self.credentials.access_token(tenant, selector, false).await?;
        call_with_refresh!(
            self,
            tenant,
            deadline,
            lease,
            upstream::Call::other("calendar profile"),
            |token| { self.cronofy.revoke_profile(&tenant.app.endpoints, token, profile_id) }
        )?;
        let stored = self.credentials.find(tenant, selector).await?;
        info!(tenant = %tenant.id, sub = %stored.grant.sub, profile_id, "calendar profile revoked");
        Ok(stored.grant)
    }

    /// One round of the revocation worker: retries the revokes Cronofy has not
    /// taken yet, with exponential backoff (`base` doubling, at most an hour).
    /// Returns how many were completed.
    pub async fn retry_revocations(&self, tenants: &HashMap<String, Arc<Tenant>>, base: Duration) -> usize {
        let due = match self.store.due_revocations(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "reading pending revocations failed");
                return 0;
            }
        };
        let mut done = 0;
        for pending in due {
            let Some(tenant) = tenants.get(&pending.tenant_id) else {
                // A tenant removed from the config: nobody can revoke for it any more.
                warn!(tenant = %pending.tenant_id, sub = %pending.sub, "a pending revocation's tenant is not configured; dropped");
                let _ = self.store.finish_revocation(&pending.tenant_id, &pending.sub).await;
                continue;
            };
            let sub = pending.sub.as_str();
            match self.held_by_another_tenant(tenant, sub).await {
                Ok(false) => {}
                Ok(true) => {
                    info!(tenant = %tenant.id, sub, "another tenant of the application now holds the account: queued revocation dropped");
                    METRICS.revocation("dropped");
                    let _ = self.store.finish_revocation(&tenant.id, sub).await;
                    continue;
                }
                Err(_) => continue,
            }
            // Each attempt first checks the revocation still waits: a consent
            // given meanwhile drops it, and must not be ended by a retry.
            let outcome = self
                .resilience
                .call(&tenant.id, None, || async {
                    match self.store.revocation_pending(&tenant.id, sub).await {
                        // Unsure: revoking as queued is the safe side of a failed read.
                        Ok(true) | Err(_) => self.cronofy.revoke_by_sub(&tenant.app, sub).await.map(|()| true),
                        Ok(false) => Ok(false),
                    }
                })
                .await;
            match outcome {
                Ok(false) => {
                    info!(tenant = %tenant.id, sub, "the user consented again: queued revocation dropped");
                    METRICS.revocation("dropped");
                }
                Ok(true) | Err(GuardError::Upstream(CronofyError::InvalidGrant)) => {
                    info!(tenant = %tenant.id, sub, attempts = pending.attempts + 1, "revoked at Cronofy");
                    METRICS.revocation("revoked");
                    if self.store.finish_revocation(&tenant.id, sub).await.is_ok() {
                        done += 1;
                    }
                }
                Err(failure) => {
                    let backoff = base
                        .saturating_mul(2u32.saturating_pow(pending.attempts.clamp(0, 20) as u32))
                        .min(MAX_BACKOFF);
                    warn!(tenant = %tenant.id, sub, attempts = pending.attempts + 1, ?backoff, error = %upstream::guard_error(failure, upstream::Call::other("authorization")), "revoking at Cronofy failed again");
                    METRICS.revocation("failed");
                    let _ = self
                        .store
                        .postpone_revocation(&tenant.id, sub, backoff.as_secs().max(1) as i64)
                        .await;
                }
            }
        }
        done
    }
}
