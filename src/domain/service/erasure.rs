//! Erasure: one user on a privacy request (ForgetUser), or a whole tenant
//! when its product is offboarded (`calgate purge-tenant`). Cronofy's side
//! (events, channel, authorization) is done first, while calgate still holds
//! what it needs; then every row goes in one transaction. A revoke Cronofy
//! does not take never stops the erasure: it is queued (by sub alone) and
//! retried.

use std::sync::Arc;

use tracing::{info, warn};

use super::{Channels, ConnectService, Credentials, Deadline, EventService, revoke::UpstreamRevoke, store_failure};
use crate::{clock::Clock, store::Store, tasks::Tasks};
use crate::{
    domain::{
        Error, Tenant,
        audit::Actor,
        grant::{GrantSelector, GrantStatus},
    },
    store::{PurgeTarget, PurgedRows},
};
use std::time::Duration;

/// Erasure (ForgetUser, purge-tenant) and the audit trail's retention.
#[derive(Debug)]
pub struct ErasureService {
    pub(super) store: Store,
    pub(super) clock: Clock,
    pub(super) credentials: Arc<Credentials>,
    /// Revokes at Cronofy.
    pub(super) connect: Arc<ConnectService>,
    /// Deletes the user's events.
    pub(super) events: Arc<EventService>,
    /// Closes the user's channel.
    pub(super) channels: Arc<Channels>,
    pub(super) tasks: Tasks,
    /// How long audit rows are kept.
    pub(super) audit_retention: Duration,
}

/// What an erasure does with one grant's events at Cronofy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Events {
    /// Leaves them.
    Keep,
    /// They were deleted already.
    Deleted,
    /// Deletes them while the grant can still be used.
    DeleteIfUsable,
}

/// What ForgetUser did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The sub forgotten.
    pub sub: String,
    /// The user's events were deleted at Cronofy.
    pub events_deleted: bool,
    /// Cronofy's revoke failed and waits in the revocation queue.
    pub upstream_pending: bool,
    /// The person's earlier grants, erased with it: subs their user_refs
    /// were bound to before.
    pub other_subs: Vec<String>,
}

/// What purging a tenant did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Grants whose authorization Cronofy revoked (or no longer knew).
    pub revoked: u64,
    /// Subs whose revoke Cronofy did not take: queued, and retried by a
    /// serving replica's revocation worker or the next purge-tenant run.
    pub revoke_pending: Vec<String>,
    /// Grants not revoked at Cronofy because another tenant of the
    /// application holds the account (its tokens here are erased all the same).
    pub left_to_other_tenants: u64,
    /// Rows deleted and audit rows pseudonymised.
    pub rows: PurgedRows,
}

impl ErasureService {
    /// Removes audit rows recorded longer ago than `audit.retention`.
    /// Returns how many went.
    pub async fn prune_audit(&self) -> Result<u64, Error> {
        let cutoff = self.clock.now() - self.audit_retention;
        self.store
            .prune_audit(
                (cutoff.unix_timestamp_nanos() / 1_000_000) as i64,
                self.audit_retention.as_millis() as i64,
            )
            .await
            .map_err(|error| store_failure("*", "pruning the audit trail", &error))
    }

    /// Erases one user: their events when `delete_events`, their channel and
    /// authorization at Cronofy, and every row about them here. Runs as its
    /// own task: a caller who gives up midway (its deadline, a dropped
    /// connection) does not leave a user revoked at Cronofy and still stored.
    pub async fn forget_user(
        self: &Arc<Self>,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        delete_events: bool,
        deadline: Deadline,
        actor: &Actor,
    ) -> Result<Forgotten, Error> {
        let (this, tenant, selector, actor) = (self.clone(), tenant.clone(), selector.clone(), actor.clone());
        self.tasks
            .spawn(async move { this.forget(&tenant, &selector, delete_events, deadline, &actor).await })
            .await
            .unwrap_or_else(|joined| {
                tracing::error!(error = %joined, "a ForgetUser died");
                Err(Error::StoreUnavailable)
            })
    }

    async fn forget(
        &self,
        tenant: &Arc<Tenant>,
        selector: &GrantSelector,
        delete_events: bool,
        deadline: Deadline,
        actor: &Actor,
    ) -> Result<Forgotten, Error> {
        let stored = match (self.credentials.find(tenant, selector).await, selector) {
            (Ok(stored), _) => stored,
            // No grant, but perhaps an Enterprise Connect authorization or past bindings.
            (Err(Error::GrantNotFound), GrantSelector::UserRef(user_ref)) => {
                return self.forget_unbound(tenant, user_ref, actor).await;
            }
            (Err(error), _) => return Err(error),
        };
        let sub = stored.grant.sub.clone();
        if delete_events {
            // Fails (and erases nothing) when the grant cannot be used: the caller asked for this.
            let by_sub = GrantSelector::Sub(sub.clone());
            self.events.delete_all_events(tenant, &by_sub, &[], deadline).await?;
        }
        // The person's earlier grants (their user_ref connected under another
        // sub before) go first: a failure here leaves the user_ref to retry with.
        let others = self
            .store
            .other_grants_of_person(&tenant.id, &sub)
            .await
            .map_err(|error| store_failure(&tenant.id, "finding a user's other grants", &error))?;
        let mut upstream_pending = false;
        let their_events = if delete_events {
            Events::DeleteIfUsable
        } else {
            Events::Keep
        };
        for other in &others {
            let (pending, _) = self.forget_grant(tenant, other, their_events, deadline, actor).await?;
            upstream_pending |= pending;
        }
        let events = if delete_events { Events::Deleted } else { Events::Keep };
        let (pending, user_refs) = self.forget_grant(tenant, &sub, events, deadline, actor).await?;
        upstream_pending |= pending;
        for user_ref in &user_refs {
            self.credentials.tokens.forget_user_ref(&tenant.id, user_ref);
        }
        info!(tenant = %tenant.id, events_deleted = delete_events, upstream_pending, earlier_grants = others.len(), "user forgotten");
        Ok(Forgotten {
            sub,
            events_deleted: delete_events,
            upstream_pending,
            other_subs: others,
        })
    }

    /// Revokes one grant of the person at Cronofy (its events first, when
    /// asked and it can still be used) and erases its rows. Returns whether
    /// the revoke waits in the queue, and the user_refs it had.
    async fn forget_grant(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        events: Events,
        deadline: Deadline,
        actor: &Actor,
    ) -> Result<(bool, Vec<String>), Error> {
        let stored = self
            .credentials
            .find(tenant, &GrantSelector::Sub(sub.to_owned()))
            .await?;
        let by_sub = GrantSelector::Sub(sub.to_owned());
        let events_deleted = match events {
            Events::Keep => false,
            Events::Deleted => true,
            Events::DeleteIfUsable => match self.events.delete_all_events(tenant, &by_sub, &[], deadline).await {
                Ok(()) => true,
                // An earlier grant without its authorization: no token deletes its events.
                Err(Error::GrantNeedsReauth | Error::GrantRevoked | Error::GrantIsServiceAccount) => false,
                Err(error) => return Err(error),
            },
        };
        let upstream = if stored.grant.status == GrantStatus::Revoked {
            UpstreamRevoke::Revoked
        } else {
            self.channels.close_grant_channel(tenant, sub).await?;
            self.connect.revoke_upstream(tenant, sub, deadline).await?
        };
        let detail = format!(
            "events deleted: {events_deleted}; upstream revoke: {}",
            upstream.as_str()
        );
        let forgotten = self
            .store
            .forget_grant(&tenant.id, sub, actor, detail)
            .await
            .map_err(|error| store_failure(&tenant.id, "forgetting a user", &error))?
            .ok_or(Error::GrantNotFound)?;
        self.credentials.tokens.forget_grant(&tenant.id, sub);
        Ok((upstream == UpstreamRevoke::Queued, forgotten.user_refs))
    }

    /// ForgetUser of a user_ref naming no grant: what is left of it (an
    /// Enterprise Connect authorization pending or failed, past bindings).
    async fn forget_unbound(&self, tenant: &Arc<Tenant>, user_ref: &str, actor: &Actor) -> Result<Forgotten, Error> {
        let found = self
            .store
            .forget_user_ref(&tenant.id, user_ref, actor)
            .await
            .map_err(|error| store_failure(&tenant.id, "forgetting a user_ref", &error))?;
        if !found {
            return Err(Error::GrantNotFound);
        }
        info!(tenant = %tenant.id, "user_ref without a grant forgotten");
        Ok(Forgotten {
            sub: String::new(),
            events_deleted: false,
            upstream_pending: false,
            other_subs: Vec::new(),
        })
    }

    /// Offboards a tenant: closes every channel and revokes every grant at
    /// Cronofy (with the usual retries), retries revocations still queued,
    /// then deletes every row of the tenant. `progress` hears of each grant.
    pub async fn purge_tenant(
        &self,
        tenant: &Arc<Tenant>,
        actor: &Actor,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Purged, Error> {
        let targets = self
            .store
            .purge_targets(&tenant.id)
            .await
            .map_err(|error| store_failure(&tenant.id, "listing a tenant's grants", &error))?;
        let queued = self
            .store
            .revocations_of(&tenant.id)
            .await
            .map_err(|error| store_failure(&tenant.id, "listing a tenant's revocations", &error))?;
        let to_revoke: Vec<&str> = targets
            .iter()
            .filter(|target| target.has_tokens)
            .map(|target: &PurgeTarget| target.sub.as_str())
            .chain(queued.iter().map(String::as_str))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut purged = Purged::default();
        for (done, sub) in to_revoke.iter().enumerate() {
            if targets.iter().any(|target| target.sub == *sub && target.has_tokens) {
                // Best effort, and before the revoke: closing needs the grant's token.
                if let Err(error) = self.channels.close_grant_channel(tenant, sub).await {
                    warn!(tenant = %tenant.id, %error, "closing a channel before a purge failed");
                }
            }
            match self.connect.revoke_upstream(tenant, sub, None).await? {
                UpstreamRevoke::Queued => purged.revoke_pending.push((*sub).to_owned()),
                UpstreamRevoke::Revoked => {
                    purged.revoked += 1;
                    let _ = self.store.finish_revocation(&tenant.id, sub).await;
                }
                UpstreamRevoke::LeftToOtherTenants => {
                    purged.left_to_other_tenants += 1;
                    let _ = self.store.finish_revocation(&tenant.id, sub).await;
                }
            }
            progress(done + 1, to_revoke.len());
        }
        let detail = format!(
            "{} grants; {} revoked at Cronofy; {} revocations pending",
            targets.len(),
            purged.revoked,
            purged.revoke_pending.len()
        );
        purged.rows = self
            .store
            .purge_tenant_rows(&tenant.id, &purged.revoke_pending, actor, detail)
            .await
            .map_err(|error| store_failure(&tenant.id, "purging a tenant", &error))?;
        for target in &targets {
            self.store.remove_spilled(&tenant.id, &target.sub);
            self.credentials.tokens.forget_grant(&tenant.id, &target.sub);
        }
        info!(tenant = %tenant.id, grants = purged.rows.grants, revoked = purged.revoked, pending = purged.revoke_pending.len(), "tenant purged");
        Ok(purged)
    }
}
