//! Erasure: one user on a privacy request (ForgetUser), or a whole tenant
//! when its product is offboarded (`calgate purge-tenant`). Cronofy's side
//! (events, channel, authorization) is done first, while calgate still holds
//! what it needs; then every row goes in one transaction. A revoke Cronofy
//! does not take never stops the erasure: it is queued (by sub alone) and
//! retried.

use std::sync::Arc;

use tracing::{info, warn};

use super::{Channels, ConnectService, Credentials, Deadline, EventService, revoke::UpstreamRevoke, store_failure};
use crate::{clock::Clock, config::ErasureSettings, store::Store, tasks::Tasks, telemetry::metrics::METRICS};
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
    /// `[erasure]`: waiting for deleted events.
    pub(super) settings: ErasureSettings,
}

/// What became of one grant's events at Cronofy, as far as an erasure got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deleted {
    /// Not asked for: they stay.
    NotAsked,
    /// Deleted, and a read of the user's events found none of the tenant's left at this time.
    Confirmed(time::OffsetDateTime),
    /// Asked for, but not seen done yet (Cronofy slow or failing): the erasure waits.
    Unconfirmed,
    /// Asked for, but no token can delete them any more (the grant needs its
    /// user again, or was revoked): an earlier grant of the person's.
    Impossible,
}

impl Deleted {
    /// How the audit row's detail says it.
    pub(super) fn describe(self) -> String {
        match self {
            Deleted::NotAsked => "events kept".to_owned(),
            Deleted::Confirmed(at) => format!(
                "events deleted, confirmed at {}",
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ),
            Deleted::Unconfirmed => "events deletion pending".to_owned(),
            Deleted::Impossible => "events not deleted: the grant could no longer be used".to_owned(),
        }
    }
}

/// Whether the person's events are confirmed gone, as ForgetUser answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsDeletion {
    /// The caller did not ask for it.
    NotAsked,
    /// Every grant's events were seen gone at Cronofy before its revoke.
    Confirmed,
    /// Cronofy accepted the deletes (or failed them) and they were not seen
    /// applied yet: the erasure worker finishes the erasure once they are.
    Pending,
}

/// What ForgetUser did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The sub forgotten.
    pub sub: String,
    /// What became of the person's events.
    pub events: EventsDeletion,
    /// Cronofy's revoke failed and waits in the revocation queue.
    pub upstream_pending: bool,
    /// The person's earlier grants, erased with it: subs their user_refs
    /// were bound to before.
    pub other_subs: Vec<String>,
}

/// What erasing one grant did.
pub(super) struct GrantErased {
    /// Cronofy's revoke waits in the revocation queue.
    pub(super) upstream_pending: bool,
    /// The user_refs it had.
    pub(super) user_refs: Vec<String>,
    /// Its erasure waits for its events to be seen gone.
    pub(super) deferred: bool,
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
    /// Subs of ForgetUser erasures whose deleted events are still not seen
    /// gone: their grants (tokens and event records) are kept, not revoked,
    /// for the erasure worker or the next purge-tenant run.
    pub erasures_pending: Vec<String>,
    /// Queued writes still waiting that were dropped, never to be delivered.
    pub queued_writes_dropped: u64,
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
        // The grant's own events first: when the grant cannot be used this
        // fails, and erases nothing (the caller asked for the deletion).
        let deleted = if delete_events {
            self.delete_events(tenant, &GrantSelector::Sub(sub.clone()), true, deadline)
                .await?
        } else {
            Deleted::NotAsked
        };
        // The person's earlier grants (their user_ref connected under another
        // sub before) go next: a failure here leaves the user_ref to retry with.
        let others = self
            .store
            .other_grants_of_person(&tenant.id, &sub)
            .await
            .map_err(|error| store_failure(&tenant.id, "finding a user's other grants", &error))?;
        let (mut upstream_pending, mut deferred) = (false, false);
        for other in &others {
            let selector = GrantSelector::Sub(other.clone());
            let theirs = if delete_events {
                self.delete_events(tenant, &selector, false, deadline).await?
            } else {
                Deleted::NotAsked
            };
            let erased = self.erase_grant(tenant, other, theirs, deadline, actor).await?;
            upstream_pending |= erased.upstream_pending;
            deferred |= erased.deferred;
        }
        let erased = self.erase_grant(tenant, &sub, deleted, deadline, actor).await?;
        upstream_pending |= erased.upstream_pending;
        deferred |= erased.deferred;
        for user_ref in &erased.user_refs {
            self.credentials.tokens.forget_user_ref(&tenant.id, user_ref);
        }
        let events = match (delete_events, deferred) {
            (false, _) => EventsDeletion::NotAsked,
            (true, false) => EventsDeletion::Confirmed,
            (true, true) => EventsDeletion::Pending,
        };
        info!(tenant = %tenant.id, ?events, upstream_pending, earlier_grants = others.len(), "user forgotten");
        Ok(Forgotten {
            sub,
            events,
            upstream_pending,
            other_subs: others,
        })
    }

    /// Erases one grant of the person: revokes it at Cronofy and deletes its
    /// rows — or, while its events are not seen gone, hides it from callers
    /// (erasing its user_refs) and leaves the rest to the erasure worker.
    pub(super) async fn erase_grant(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        deleted: Deleted,
        deadline: Deadline,
        actor: &Actor,
    ) -> Result<GrantErased, Error> {
        if deleted == Deleted::Unconfirmed {
            // Its changes must not reach callers meanwhile; the token stays, to delete and read with.
            self.channels.close_grant_channel(tenant, sub).await?;
            let user_refs = self
                .store
                .defer_erasure(
                    &tenant.id,
                    sub,
                    actor,
                    self.settings.retry_interval.as_secs().max(1) as i64,
                    "Cronofy's deletes not seen applied yet; revoked once they are".to_owned(),
                )
                .await
                .map_err(|error| store_failure(&tenant.id, "deferring an erasure", &error))?
                .ok_or(Error::GrantNotFound)?;
            self.credentials.tokens.forget_grant(&tenant.id, sub);
            METRICS.erasure("deferred");
            return Ok(GrantErased {
                upstream_pending: false,
                user_refs,
                deferred: true,
            });
        }
        let stored = self
            .credentials
            .find(tenant, &GrantSelector::Erasing(sub.to_owned()))
            .await?;
        let upstream = if stored.grant.status == GrantStatus::Revoked {
            UpstreamRevoke::Revoked
        } else {
            self.channels.close_grant_channel(tenant, sub).await?;
            self.connect.revoke_upstream(tenant, sub, deadline).await?
        };
        let detail = format!("{}; upstream revoke: {}", deleted.describe(), upstream.as_str());
        let forgotten = self
            .store
            .forget_grant(&tenant.id, sub, actor, detail)
            .await
            .map_err(|error| store_failure(&tenant.id, "forgetting a user", &error))?
            .ok_or(Error::GrantNotFound)?;
        self.credentials.tokens.forget_grant(&tenant.id, sub);
        if matches!(deleted, Deleted::Confirmed(_)) {
            METRICS.erasure(if stored.erasing { "confirmed_later" } else { "confirmed" });
        }
        Ok(GrantErased {
            upstream_pending: upstream == UpstreamRevoke::Queued,
            user_refs: forgotten.user_refs,
            deferred: false,
        })
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
            events: EventsDeletion::NotAsked,
            upstream_pending: false,
            other_subs: Vec::new(),
        })
    }

    /// Offboards a tenant: gives each ForgetUser erasure still waiting one
    /// more attempt, closes every channel and revokes every other grant at
    /// Cronofy (with the usual retries), retries revocations still queued,
    /// then deletes every row of the tenant but the grants of erasures that
    /// still wait. `progress` hears of each grant.
    pub async fn purge_tenant(
        &self,
        tenant: &Arc<Tenant>,
        actor: &Actor,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Purged, Error> {
        // Nothing of the tenant's is written to calendars any more, even
        // while the revokes below take their time.
        let queued_writes_dropped = self
            .store
            .drop_tenant_queued_writes(&tenant.id)
            .await
            .map_err(|error| store_failure(&tenant.id, "dropping a tenant's queued writes", &error))?;
        // ForgetUser erasures still waiting go first, each given one more
        // attempt: a grant whose events are not seen gone is not revoked.
        let waiting = self
            .store
            .erasures_of(&tenant.id)
            .await
            .map_err(|error| store_failure(&tenant.id, "listing a tenant's pending erasures", &error))?;
        let mut erasures_pending = Vec::new();
        for erasure in &waiting {
            match self.finish_erasure(tenant, erasure).await {
                Ok(true) => {}
                Ok(false) => erasures_pending.push(erasure.sub.clone()),
                Err(error) => {
                    warn!(tenant = %tenant.id, %error, "a pending erasure failed during the purge");
                    erasures_pending.push(erasure.sub.clone());
                }
            }
        }
        let targets: Vec<PurgeTarget> = self
            .store
            .purge_targets(&tenant.id)
            .await
            .map_err(|error| store_failure(&tenant.id, "listing a tenant's grants", &error))?
            .into_iter()
            .filter(|target| !erasures_pending.contains(&target.sub))
            .collect();
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
        let mut purged = Purged {
            erasures_pending,
            queued_writes_dropped,
            ..Purged::default()
        };
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
            "{} grants; {} revoked at Cronofy; {} revocations pending; {} erasures waiting for deleted events; \
             {} queued writes dropped",
            targets.len(),
            purged.revoked,
            purged.revoke_pending.len(),
            purged.erasures_pending.len(),
            purged.queued_writes_dropped
        );
        purged.rows = self
            .store
            .purge_tenant_rows(
                &tenant.id,
                &purged.revoke_pending,
                &purged.erasures_pending,
                actor,
                detail,
            )
            .await
            .map_err(|error| store_failure(&tenant.id, "purging a tenant", &error))?;
        purged.queued_writes_dropped += purged.rows.queued_writes_dropped;
        for target in &targets {
            self.store.remove_spilled(&tenant.id, &target.sub);
            self.credentials.tokens.forget_grant(&tenant.id, &target.sub);
        }
        info!(tenant = %tenant.id, grants = purged.rows.grants, revoked = purged.revoked, pending = purged.revoke_pending.len(), "tenant purged");
        Ok(purged)
    }
}
