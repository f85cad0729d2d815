//! Delivering queued writes: the same Cronofy call as the immediate one,
//! from the body stored when it was accepted — or several writes of one user
//! in one `/v1/batch` request — paid from what immediate calls leave of the
//! application's budget ([`crate::resilience::Resilience::admit_queued`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{EventService, credentials::TokenLease};
use crate::{
    cronofy::{BatchEntry, CronofyError},
    domain::{
        Error, Tenant,
        changes::{EventState, SeenTime},
        event::Event,
        grant::GrantSelector,
        upstream::{self, Call},
    },
    resilience::{GuardError, Payer},
};

/// One queued write of a batch delivery.
#[derive(Debug)]
pub(super) enum QueuedOp<'a> {
    /// An upsert, with the body stored when it was accepted.
    Upsert {
        calendar_id: &'a str,
        event_id: &'a str,
        upsert: QueuedUpsert,
    },
    /// A delete.
    Delete { calendar_id: &'a str, event_id: &'a str },
}

impl QueuedOp<'_> {
    fn calendar_id(&self) -> &str {
        match self {
            QueuedOp::Upsert { calendar_id, .. } | QueuedOp::Delete { calendar_id, .. } => calendar_id,
        }
    }

    /// The call whose errors this write's would be, had it gone alone.
    fn call(&self) -> Call<'static> {
        match self {
            QueuedOp::Upsert { .. } => Call::event("event.", "calendar_id"),
            QueuedOp::Delete { .. } => Call::event("", "calendar_id"),
        }
    }

    /// Its batch entry, after the checks a delivery of its own would make.
    fn entry(&self, tenant: &Tenant, lease: &TokenLease) -> Result<BatchEntry, Error> {
        lease.gate.check(self.calendar_id())?;
        match self {
            QueuedOp::Upsert {
                calendar_id,
                event_id,
                upsert,
            } => {
                if let Some(profile_id) = &upsert.conferencing_profile {
                    lease.gate.check_conferencing(profile_id)?;
                }
                BatchEntry::upsert(calendar_id, &tenant.event_ids.upstream(event_id), &upsert.event)
                    .map_err(|_| Error::UpstreamRefused("an event could not be encoded"))
            }
            QueuedOp::Delete { calendar_id, event_id } => {
                Ok(BatchEntry::delete(calendar_id, &tenant.event_ids.upstream(event_id)))
            }
        }
    }
}

/// What delivering a queued upsert needs, stored sealed with it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct QueuedUpsert {
    /// The event as Cronofy is sent it (without its `event_id`).
    pub(super) event: serde_json::Value,
    /// The conferencing profile the event asks for, checked again at delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) conferencing_profile: Option<String>,
    /// What calgate records of the write once delivered: start, end
    /// (canonical UTC texts or dates) and summary.
    pub(super) start: String,
    pub(super) end: String,
    pub(super) summary: String,
}

impl QueuedUpsert {
    /// The stored form of `event`'s upsert.
    pub(super) fn of(event: &Event) -> Result<QueuedUpsert, Error> {
        Ok(QueuedUpsert {
            event: serde_json::to_value(event.to_cronofy())
                .map_err(|_| Error::UpstreamRefused("an event could not be encoded"))?,
            conferencing_profile: event.conferencing.as_ref().map(|c| c.profile_id.clone()),
            start: SeenTime::written(&event.start).canonical(),
            end: SeenTime::written(&event.end).canonical(),
            summary: event.summary.clone(),
        })
    }

    /// What calgate records once it is delivered.
    fn written(&self) -> Option<EventState> {
        Some(EventState::Present {
            start: SeenTime::parse(&self.start)?,
            end: SeenTime::parse(&self.end)?,
            summary: self.summary.clone(),
        })
    }
}

impl EventService {
    /// Delivers a queued upsert to the grant `sub`, checking again what an
    /// immediate write checks (the grant usable, the calendar's profile and
    /// the conferencing profile connected).
    pub(super) async fn deliver_upsert(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
        upsert: &QueuedUpsert,
    ) -> Result<(), Error> {
        let upstream_id = tenant.event_ids.upstream(event_id);
        let lease = self.writable_lease(tenant, sub, calendar_id).await?;
        if let Some(profile_id) = &upsert.conferencing_profile {
            lease.gate.check_conferencing(profile_id)?;
        }
        call_with_refresh!(
            self,
            tenant,
            paid_by(Payer::Queue { cost: 1 }, self.resilience.give_up_at(None)),
            lease,
            Call::event("event.", "calendar_id"),
            |token| {
                self.cronofy
                    .upsert_event(&tenant.app.endpoints, token, calendar_id, &upstream_id, &upsert.event)
            }
        )?;
        if let Some(written) = upsert.written() {
            self.remember_event(tenant, sub, calendar_id, event_id, written).await;
        }
        Ok(())
    }

    /// Delivers a queued delete to the grant `sub`.
    pub(super) async fn deliver_delete(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<(), Error> {
        let upstream_id = tenant.event_ids.upstream(event_id);
        let lease = self.writable_lease(tenant, sub, calendar_id).await?;
        call_with_refresh!(
            self,
            tenant,
            paid_by(Payer::Queue { cost: 1 }, self.resilience.give_up_at(None)),
            lease,
            Call::event("", "calendar_id"),
            |token| {
                self.cronofy
                    .delete_event(&tenant.app.endpoints, token, calendar_id, &upstream_id)
            }
        )?;
        self.remember_event(tenant, sub, calendar_id, event_id, EventState::Deleted)
            .await;
        Ok(())
    }

    /// Delivers several queued writes of the grant `sub` in one `/v1/batch`
    /// request, each checked as its own delivery would be; one outcome per
    /// write, in order. The request counts against the budget as
    /// [`crate::resilience::Resilience::batch_cost`] says.
    pub(super) async fn deliver_batch(
        &self,
        tenant: &Arc<Tenant>,
        sub: &str,
        ops: &[QueuedOp<'_>],
    ) -> Vec<Result<(), Error>> {
        let lease = match self
            .credentials
            .access_token(tenant, &GrantSelector::Sub(sub.to_owned()), true)
            .await
        {
            Ok(lease) => lease,
            Err(error) => return vec![Err(error); ops.len()],
        };
        let mut outcomes: Vec<Result<(), Error>> = Vec::with_capacity(ops.len());
        let (mut entries, mut sent) = (Vec::new(), Vec::new());
        for (index, op) in ops.iter().enumerate() {
            match op.entry(tenant, &lease) {
                Ok(entry) => {
                    entries.push(entry);
                    sent.push(index);
                    outcomes.push(Ok(()));
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }
        if entries.is_empty() {
            return outcomes;
        }
        let cost = self.resilience.batch_cost(&tenant.id, entries.len());
        let answered = async {
            call_with_refresh!(
                self,
                tenant,
                paid_by(Payer::Queue { cost }, self.resilience.give_up_at(None)),
                lease,
                Call::other("batch endpoint"),
                |token| { self.cronofy.batch(&tenant.app.endpoints, token, &entries) }
            )
        }
        .await;
        let answered = match answered {
            Ok(answered) => answered,
            Err(error) => {
                for index in sent {
                    outcomes[index] = Err(error.clone());
                }
                return outcomes;
            }
        };
        for (answer, index) in answered.into_iter().zip(sent) {
            let op = &ops[index];
            outcomes[index] = match answer {
                Err(error) => Err(upstream::api_error(error, op.call())),
                Ok(()) => {
                    let (calendar_id, event_id, written) = match op {
                        QueuedOp::Upsert {
                            calendar_id,
                            event_id,
                            upsert,
                        } => (*calendar_id, *event_id, upsert.written()),
                        QueuedOp::Delete { calendar_id, event_id } => {
                            (*calendar_id, *event_id, Some(EventState::Deleted))
                        }
                    };
                    if let Some(written) = written {
                        self.remember_event(tenant, sub, calendar_id, event_id, written).await;
                    }
                    Ok(())
                }
            };
        }
        outcomes
    }

    /// A token to write with into the grant's `calendar_id`, if a write may go there now.
    async fn writable_lease(&self, tenant: &Arc<Tenant>, sub: &str, calendar_id: &str) -> Result<TokenLease, Error> {
        let lease = self
            .credentials
            .access_token(tenant, &GrantSelector::Sub(sub.to_owned()), true)
            .await?;
        lease.gate.check(calendar_id)?;
        Ok(lease)
    }
}
