//! The yardstick: a tonic handler that forwards UpsertEvent as one reqwest
//! POST — no caller authentication, no store, no validation, no retries. What
//! calgate costs is what it takes beyond this, on the same machine in the same run.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use calgate::grpc::pb::{
    self,
    calendar_write_service_server::{CalendarWriteService, CalendarWriteServiceServer},
};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Server};

/// Forwards each UpsertEvent to `{api_base_url}v1/calendars/{calendar_id}/events`.
pub struct Passthrough {
    http: reqwest::Client,
    api_base_url: String,
    bearer: String,
    /// RPCs answered OK (the upstream said 2xx) and not.
    pub ok: Arc<AtomicU64>,
    /// RPCs answered with an error.
    pub failed: Arc<AtomicU64>,
}

impl Passthrough {
    /// A passthrough using one fixed access token.
    pub fn new(api_base_url: String, access_token: String) -> Passthrough {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client without TLS options cannot fail to build");
        Passthrough {
            http,
            api_base_url,
            bearer: format!("Bearer {access_token}"),
            ok: Arc::default(),
            failed: Arc::default(),
        }
    }

    async fn forward(&self, request: pb::UpsertEventRequest) -> Result<(), Status> {
        let event = request.event.unwrap_or_default();
        let time = |t: Option<pb::EventTime>| match t.and_then(|t| t.value) {
            Some(pb::event_time::Value::Time(ts)) => time::OffsetDateTime::from_unix_timestamp(ts.seconds)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default(),
            Some(pb::event_time::Value::Date(date)) => date,
            None => String::new(),
        };
        let body = json!({
            "event_id": event.event_id,
            "summary": event.summary,
            "start": time(event.start),
            "end": time(event.end),
        });
        let url = format!("{}v1/calendars/{}/events", self.api_base_url, request.calendar_id);
        let response = self
            .http
            .post(url)
            .header("authorization", &self.bearer)
            .json(&body)
            .send()
            .await
            .map_err(|_| Status::unavailable("upstream unreachable"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Status::unknown(format!("upstream answered {}", response.status())))
        }
    }
}

/// Implements the service: UpsertEvent forwards, the other RPCs are
/// unimplemented (generated here so that `async_trait` sees them expanded).
macro_rules! passthrough_service {
    ($($name:ident: $request:ident => $response:ident),* $(,)?) => {
        #[tonic::async_trait]
        impl CalendarWriteService for Passthrough {
            type WatchChangesStream = futures::stream::Empty<Result<pb::Change, Status>>;

            async fn watch_changes(
                &self,
                _: Request<pb::WatchChangesRequest>,
            ) -> Result<Response<Self::WatchChangesStream>, Status> {
                Err(Status::unimplemented("the passthrough forwards UpsertEvent only"))
            }

            async fn upsert_event(
                &self,
                request: Request<pb::UpsertEventRequest>,
            ) -> Result<Response<pb::UpsertEventResponse>, Status> {
                let outcome = self.forward(request.into_inner()).await;
                let counter = if outcome.is_ok() { &self.ok } else { &self.failed };
                counter.fetch_add(1, Ordering::Relaxed);
                outcome.map(|()| Response::new(pb::UpsertEventResponse::default()))
            }

            $(
                async fn $name(&self, _: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                    Err(Status::unimplemented("the passthrough forwards UpsertEvent only"))
                }
            )*
        }
    };
}

passthrough_service! {
    build_authorize_url: BuildAuthorizeUrlRequest => BuildAuthorizeUrlResponse,
    exchange_code: ExchangeCodeRequest => ExchangeCodeResponse,
    delete_all_events: DeleteAllEventsRequest => DeleteAllEventsResponse,
    delete_event: DeleteEventRequest => DeleteEventResponse,
    list_calendars: ListCalendarsRequest => ListCalendarsResponse,
    batch_write_events: BatchWriteEventsRequest => BatchWriteEventsResponse,
    read_free_busy: ReadFreeBusyRequest => ReadFreeBusyResponse,
    query_availability: QueryAvailabilityRequest => QueryAvailabilityResponse,
    authorize_enterprise_user: AuthorizeEnterpriseUserRequest => AuthorizeEnterpriseUserResponse,
    get_enterprise_user_authorization: GetEnterpriseUserAuthorizationRequest => GetEnterpriseUserAuthorizationResponse,
    get_grant: GetGrantRequest => GetGrantResponse,
    revoke_grant: RevokeGrantRequest => RevokeGrantResponse,
    forget_user: ForgetUserRequest => ForgetUserResponse,
    get_write: GetWriteRequest => GetWriteResponse,
}

/// Serves the passthrough on `listen` until the process is stopped; prints
/// `{"ok":N,"failed":M}` on SIGTERM/Ctrl-C so the harness can check it.
pub async fn serve(listen: SocketAddr, api_base_url: String, access_token: String) -> anyhow::Result<()> {
    let passthrough = Passthrough::new(api_base_url, access_token);
    let (ok, failed) = (passthrough.ok.clone(), passthrough.failed.clone());
    let listener = TcpListener::bind(listen).await?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // The overall health service ("") reports SERVING; the harness waits for it.
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::builder()
        .add_service(health)
        .add_service(CalendarWriteServiceServer::new(passthrough))
        .serve_with_incoming_shutdown(incoming, calgate::server::shutdown_signal())
        .await?;
    println!(
        "{}",
        json!({"ok": ok.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed)})
    );
    Ok(())
}
