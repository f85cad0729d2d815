//! Handlers: caller → parse → domain → convert back. Nothing else.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    convert, deadline,
    interceptor::caller,
    pb::{self, calendar_write_service_server::CalendarWriteService},
    status,
};
use crate::domain::{EventsDeletion, Services};

/// The calgate.v1 CalendarWriteService.
#[derive(Debug, Clone)]
pub struct CalendarWriteApi {
    services: Arc<Services>,
}

impl CalendarWriteApi {
    /// Serves the given domain services.
    pub fn new(services: Arc<Services>) -> Self {
        CalendarWriteApi { services }
    }
}

/// The stream WatchChanges answers with.
type ChangeStream = Pin<Box<dyn Stream<Item = Result<pb::Change, Status>> + Send>>;

#[tonic::async_trait]
impl CalendarWriteService for CalendarWriteApi {
    type WatchChangesStream = ChangeStream;

    async fn watch_changes(
        &self,
        request: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let caller = caller(&request)?;
        let after = convert::watch_request(request.get_ref())?;
        let changes = self.services.changes.watch_changes(&caller.tenant, after).await?;
        let stream = ReceiverStream::new(changes).map(|item| item.map(convert::change).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn build_authorize_url(
        &self,
        request: Request<pb::BuildAuthorizeUrlRequest>,
    ) -> Result<Response<pb::BuildAuthorizeUrlResponse>, Status> {
        let caller = caller(&request)?;
        let parsed = convert::authorize_request(request.into_inner())?;
        let built = self.services.connect.build_authorize_url(&caller.tenant, parsed)?;
        Ok(Response::new(pb::BuildAuthorizeUrlResponse {
            url: built.url,
            state: built.state,
            state_expires_at: Some(convert::timestamp(built.state_expires_at)),
        }))
    }

    async fn exchange_code(
        &self,
        request: Request<pb::ExchangeCodeRequest>,
    ) -> Result<Response<pb::ExchangeCodeResponse>, Status> {
        let caller = caller(&request)?;
        let deadline = deadline::deadline(&request);
        let parsed = convert::exchange_request(request.into_inner())?;
        let grant = deadline::within(
            deadline,
            self.services
                .connect
                .exchange_code(&caller.tenant, parsed, caller.actor.clone()),
        )
        .await?;
        Ok(Response::new(pb::ExchangeCodeResponse {
            grant: Some(convert::grant(grant)),
        }))
    }

    async fn upsert_event(
        &self,
        request: Request<pb::UpsertEventRequest>,
    ) -> Result<Response<pb::UpsertEventResponse>, Status> {
        let caller = caller(&request)?;
        let (selector, calendar_id, event) = convert::upsert_request(request.get_ref())?;
        if convert::queued(request.get_ref().mode)? {
            let accepted = self
                .services
                .queue
                .accept_upsert(&caller.tenant, &selector, &calendar_id, &event)
                .await?;
            return Ok(Response::new(pb::UpsertEventResponse {
                delivery: convert::delivery(accepted.access_mode) as i32,
                write_id: accepted.write_id,
                state: pb::WriteState::Queued as i32,
            }));
        }
        let deadline = deadline::deadline(&request);
        let access_mode = deadline::within(
            deadline,
            self.services
                .events
                .upsert_event(&caller.tenant, &selector, &calendar_id, &event, deadline),
        )
        .await?;
        Ok(Response::new(pb::UpsertEventResponse {
            delivery: convert::delivery(access_mode) as i32,
            write_id: String::new(),
            state: pb::WriteState::Delivered as i32,
        }))
    }

    async fn delete_all_events(
        &self,
        request: Request<pb::DeleteAllEventsRequest>,
    ) -> Result<Response<pb::DeleteAllEventsResponse>, Status> {
        let caller = caller(&request)?;
        let (selector, calendar_ids) = convert::delete_all_request(request.get_ref())?;
        let deadline = deadline::deadline(&request);
        deadline::within(
            deadline,
            self.services
                .events
                .delete_all_events(&caller.tenant, &selector, &calendar_ids, deadline),
        )
        .await?;
        Ok(Response::new(pb::DeleteAllEventsResponse {}))
    }

    async fn delete_event(
        &self,
        request: Request<pb::DeleteEventRequest>,
    ) -> Result<Response<pb::DeleteEventResponse>, Status> {
        let caller = caller(&request)?;
        let (selector, calendar_id, event_id) = convert::delete_request(request.get_ref())?;
        if convert::queued(request.get_ref().mode)? {
            let accepted = self
                .services
                .queue
                .accept_delete(&caller.tenant, &selector, &calendar_id, &event_id)
                .await?;
            return Ok(Response::new(pb::DeleteEventResponse {
                write_id: accepted.write_id,
                state: pb::WriteState::Queued as i32,
            }));
        }
        let deadline = deadline::deadline(&request);
        deadline::within(
            deadline,
            self.services
                .events
                .delete_event(&caller.tenant, &selector, &calendar_id, &event_id, deadline),
        )
        .await?;
        Ok(Response::new(pb::DeleteEventResponse {
            write_id: String::new(),
            state: pb::WriteState::Delivered as i32,
        }))
    }

    async fn get_write(&self, request: Request<pb::GetWriteRequest>) -> Result<Response<pb::GetWriteResponse>, Status> {
        let caller = caller(&request)?;
        let record = self
            .services
            .queue
            .get_write(&caller.tenant, &request.get_ref().write_id)
            .await?;
        Ok(Response::new(pb::GetWriteResponse {
            write: Some(convert::write(record)),
        }))
    }

    async fn list_calendars(
        &self,
        request: Request<pb::ListCalendarsRequest>,
    ) -> Result<Response<pb::ListCalendarsResponse>, Status> {
        let caller = caller(&request)?;
        let selector = convert::grant_selector(request.get_ref())?;
        let deadline = deadline::deadline(&request);
        let calendars = deadline::within(
            deadline,
            self.services.events.list_calendars(&caller.tenant, &selector, deadline),
        )
        .await?;
        Ok(Response::new(pb::ListCalendarsResponse {
            calendars: calendars.into_iter().map(convert::calendar).collect(),
        }))
    }

    async fn get_grant(&self, request: Request<pb::GetGrantRequest>) -> Result<Response<pb::GetGrantResponse>, Status> {
        let caller = caller(&request)?;
        let selector = convert::grant_selector(request.get_ref())?;
        let grant = self.services.connect.get_grant(&caller.tenant, &selector).await?;
        Ok(Response::new(pb::GetGrantResponse {
            grant: Some(convert::grant(grant)),
        }))
    }

    async fn revoke_grant(
        &self,
        request: Request<pb::RevokeGrantRequest>,
    ) -> Result<Response<pb::RevokeGrantResponse>, Status> {
        let caller = caller(&request)?;
        let (selector, profile_id) = convert::revoke_request(request.get_ref())?;
        let deadline = deadline::deadline(&request);
        if let Some(profile_id) = profile_id {
            let grant = deadline::within(
                deadline,
                self.services
                    .connect
                    .revoke_profile(&caller.tenant, &selector, &profile_id, deadline),
            )
            .await?;
            return Ok(Response::new(pb::RevokeGrantResponse {
                grant: Some(convert::grant(grant)),
                upstream_revoke_pending: false,
                profile_revoked: true,
            }));
        }
        let revoked = deadline::within(
            deadline,
            self.services
                .connect
                .revoke_grant(&caller.tenant, &selector, deadline, &caller.actor),
        )
        .await?;
        Ok(Response::new(pb::RevokeGrantResponse {
            grant: Some(convert::grant(revoked.grant)),
            upstream_revoke_pending: revoked.upstream_pending,
            profile_revoked: false,
        }))
    }

    async fn forget_user(
        &self,
        request: Request<pb::ForgetUserRequest>,
    ) -> Result<Response<pb::ForgetUserResponse>, Status> {
        let caller = caller(&request)?;
        let selector = convert::grant_selector(request.get_ref())?;
        let delete_events = request.get_ref().delete_events;
        let deadline = deadline::deadline(&request);
        let forgotten = deadline::within(
            deadline,
            self.services
                .erasure
                .forget_user(&caller.tenant, &selector, delete_events, deadline, &caller.actor),
        )
        .await?;
        Ok(Response::new(pb::ForgetUserResponse {
            sub: forgotten.sub,
            events_deleted: forgotten.events == EventsDeletion::Confirmed,
            upstream_revoke_pending: forgotten.upstream_pending,
            other_subs: forgotten.other_subs,
            events_deletion: convert::events_deletion(forgotten.events) as i32,
        }))
    }

    async fn batch_write_events(
        &self,
        request: Request<pb::BatchWriteEventsRequest>,
    ) -> Result<Response<pb::BatchWriteEventsResponse>, Status> {
        let caller = caller(&request)?;
        let (selector, ops) = convert::batch_request(request.get_ref())?;
        if convert::queued(request.get_ref().mode)? {
            let accepted = self
                .services
                .queue
                .accept_batch(&caller.tenant, &selector, &ops)
                .await?;
            let state = |item: &Result<String, _>| match item {
                Ok(_) => pb::WriteState::Queued as i32,
                Err(_) => pb::WriteState::Unspecified as i32,
            };
            return Ok(Response::new(pb::BatchWriteEventsResponse {
                states: accepted.iter().map(state).collect(),
                write_ids: accepted
                    .iter()
                    .map(|item| item.as_ref().cloned().unwrap_or_default())
                    .collect(),
                results: accepted
                    .into_iter()
                    .map(|item| status::item_status(item.map(drop)))
                    .collect(),
            }));
        }
        let deadline = deadline::deadline(&request);
        let outcomes = deadline::within(
            deadline,
            self.services
                .events
                .batch_write(&caller.tenant, &selector, &ops, deadline),
        )
        .await?;
        let state = |outcome: &Result<(), _>| match outcome {
            Ok(()) => pb::WriteState::Delivered as i32,
            Err(_) => pb::WriteState::Failed as i32,
        };
        Ok(Response::new(pb::BatchWriteEventsResponse {
            states: outcomes.iter().map(state).collect(),
            write_ids: vec![String::new(); outcomes.len()],
            results: outcomes.into_iter().map(status::item_status).collect(),
        }))
    }

    async fn read_free_busy(
        &self,
        request: Request<pb::ReadFreeBusyRequest>,
    ) -> Result<Response<pb::ReadFreeBusyResponse>, Status> {
        let caller = caller(&request)?;
        let (selector, query) = convert::free_busy_request(request.get_ref())?;
        let deadline = deadline::deadline(&request);
        let periods = deadline::within(
            deadline,
            self.services
                .events
                .read_free_busy(&caller.tenant, &selector, &query, deadline),
        )
        .await?;
        Ok(Response::new(pb::ReadFreeBusyResponse {
            periods: periods.into_iter().map(convert::free_busy_period).collect(),
        }))
    }

    async fn query_availability(
        &self,
        request: Request<pb::QueryAvailabilityRequest>,
    ) -> Result<Response<pb::QueryAvailabilityResponse>, Status> {
        let caller = caller(&request)?;
        let query = convert::availability_request(request.get_ref())?;
        let deadline = deadline::deadline(&request);
        let periods = deadline::within(
            deadline,
            self.services
                .events
                .query_availability(&caller.tenant, &query, deadline),
        )
        .await?;
        Ok(Response::new(pb::QueryAvailabilityResponse {
            available_periods: periods.into_iter().map(convert::available_period).collect(),
        }))
    }

    async fn authorize_enterprise_user(
        &self,
        request: Request<pb::AuthorizeEnterpriseUserRequest>,
    ) -> Result<Response<pb::AuthorizeEnterpriseUserResponse>, Status> {
        let caller = caller(&request)?;
        let parsed = convert::enterprise_user_request(request.get_ref())?;
        let deadline = deadline::deadline(&request);
        let authorization = deadline::within(
            deadline,
            self.services
                .enterprise
                .authorize_enterprise_user(&caller.tenant, &parsed, deadline),
        )
        .await?;
        Ok(Response::new(pb::AuthorizeEnterpriseUserResponse {
            authorization: Some(convert::enterprise_authorization(authorization)),
        }))
    }

    async fn get_enterprise_user_authorization(
        &self,
        request: Request<pb::GetEnterpriseUserAuthorizationRequest>,
    ) -> Result<Response<pb::GetEnterpriseUserAuthorizationResponse>, Status> {
        let caller = caller(&request)?;
        let id = convert::authorization_id(request.get_ref())?;
        let authorization = self
            .services
            .enterprise
            .get_enterprise_authorization(&caller.tenant, &id)
            .await?;
        Ok(Response::new(pb::GetEnterpriseUserAuthorizationResponse {
            authorization: Some(convert::enterprise_authorization(authorization)),
        }))
    }
}
