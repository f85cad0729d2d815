//! Start-up and serving: assembles calgate from [`Settings`] and serves it on
//! a bound listener until a shutdown future resolves, then drains.

mod listeners;
mod metrics_endpoint;
mod tenants;

pub use listeners::Listeners;

use std::{collections::HashMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{error, info, warn};

use crate::{
    auth::Authenticator,
    config::{CallbackSettings, ChangeSettings, GrpcSettings, MAX_MESSAGE_BYTES, Settings, TlsSettings},
    cronofy::CronofyClient,
    domain::{Clock, ServiceParts, Services, Tenant, state::StateCodec},
    grpc::{
        CalendarWriteApi, connections,
        deadline::DeadlineLayer,
        decode_budget::DecodeBudgetLayer,
        interceptor::AuthInterceptor,
        pb::{self, calendar_write_service_server::CalendarWriteServiceServer},
        stream_limits::{RequestReadDeadlineLayer, StreamCap},
    },
    health::{LIVENESS_NAME, set_health},
    resilience::{Resilience, TenantLimits},
    store::{Store, StoreError},
    tasks::Tasks,
    telemetry::{
        metrics::{KeyRoleLabels, METRICS},
        rpc_layer::RpcLayer,
    },
    workers::{
        self, BackgroundRefresher, ChangeFeedPoller, ErasureFinisher, NotificationWorker, QueueWorker, RetentionPruner,
        RevocationRetrier, StoreWatcher,
    },
};

/// Server reflection's request streams: open by design while grpcurl works,
/// bounded by `grpc.reflection_stream_lifetime` instead of the read deadline.
const REFLECTION_PATHS: &[&str] = &["/grpc.reflection."];

/// `callbacks.authorization_ttl` when there are no callbacks (nothing can be pending then).
const DEFAULT_AUTHORIZATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// TCP keep-alive on gRPC connections: a peer that vanished without a FIN is
/// found even when HTTP/2 PINGs cannot be sent.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Why calgate could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The credential store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTPS client for Cronofy could not be built (TLS roots, resolver).
    #[error("cannot build the HTTPS client for Cronofy: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// A TLS file could not be read.
    #[error("cannot read {key} `{path}`: {source}")]
    TlsFile {
        /// Config key.
        key: &'static str,
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on `{key}` = {addr}: {source}")]
    Listen {
        /// Config key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The config asks for a listener that was not handed to [`App::serve`].
    #[error("no listener given for `{key}`")]
    NoListener {
        /// Config key.
        key: &'static str,
    },
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not load the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A ready-to-serve calgate.
#[derive(Debug)]
pub struct App {
    services: Arc<Services>,
    tenants: Arc<HashMap<String, Arc<Tenant>>>,
    callbacks: Option<CallbackSettings>,
    authenticator: Authenticator,
    clock: Clock,
    tls: Option<TlsSettings>,
    shutdown_grace: Duration,
    drain_delay: Duration,
    grpc: GrpcSettings,
    revoke_retry_interval: Duration,
    /// `erasure.retry_interval`.
    erasure_retry_interval: Duration,
    changes: ChangeSettings,
    refresh_ahead_interval: Duration,
    tasks: Tasks,
}

impl App {
    /// Opens the store, builds the Cronofy client and the tenants.
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        // One clock for the domain and the store, so tests that move time move both.
        let clock = Clock::default();
        let store = Store::connect(&settings.store, &settings.encryption_keys)
            .await?
            .with_clock(clock.clone());
        let cronofy = CronofyClient::new(settings.upstream.request_timeout, settings.upstream.connect_timeout)?;
        let tenants = tenants::build_tenants(&settings.tenants, &store).await?;
        let by_id = tenants
            .iter()
            .map(|(tenant, _)| (tenant.id.clone(), tenant.clone()))
            .collect();
        let authenticator = Authenticator::new(tenants);
        let resilience = Resilience::for_store(
            settings.upstream.retry,
            settings.upstream.breaker,
            settings.tenants.iter().map(|tenant| TenantLimits {
                tenant: tenant.id.clone(),
                application: TenantLimits::application_key(&tenant.client_id, &tenant.data_center.to_string()),
                rate_limit: tenant.rate_limit,
                background_percent: settings.refresh_ahead.budget_percent,
                count_batch_entries: tenant.count_batch_entries,
            }),
            &store,
        );
        let tasks = Tasks::new();
        let services = Services::new(ServiceParts {
            store,
            cronofy,
            resilience: Arc::new(resilience),
            states: StateCodec::new(&settings.state_keys),
            state_ttl: settings.state_ttl,
            refresh_margin: settings.refresh_margin,
            token_cache_ttl: settings.store.token_cache_ttl,
            token_cache_entries: settings.store.token_cache_entries,
            clock: clock.clone(),
            callback_base: settings.callbacks.as_ref().map(|c| c.public_url.clone()),
            authorization_ttl: settings
                .callbacks
                .as_ref()
                .map_or(DEFAULT_AUTHORIZATION_TTL, |c| c.authorization_ttl),
            tasks: tasks.clone(),
            change_retention: settings.changes.retention,
            channel_check_interval: settings.changes.channel_check_interval,
            audit_retention: settings.audit.retention,
            erasure: settings.erasure,
            queue: settings.queue,
            // A refresh and the call, each within the retry ceiling (its last
            // attempt may start just before it), and a margin.
            queue_claim: (settings.upstream.retry.ceiling + settings.upstream.request_timeout) * 2
                + Duration::from_secs(10),
            max_watchers_per_tenant: settings.changes.max_watchers_per_tenant,
            refresh_ahead: settings.refresh_ahead,
        });
        Ok(App {
            services: Arc::new(services),
            tenants: Arc::new(by_id),
            callbacks: settings.callbacks,
            authenticator,
            clock,
            tls: settings.tls,
            shutdown_grace: settings.shutdown_grace,
            drain_delay: settings.drain_delay,
            grpc: settings.grpc,
            revoke_retry_interval: settings.upstream.revoke_retry_interval,
            erasure_retry_interval: settings.erasure.retry_interval,
            changes: settings.changes,
            refresh_ahead_interval: settings.refresh_ahead.interval,
            tasks,
        })
    }

    /// The services (operator commands run their operations without serving).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// A configured tenant.
    pub fn tenant(&self, id: &str) -> Option<Arc<Tenant>> {
        self.tenants.get(id).cloned()
    }

    /// The service's clock (tests move it forward).
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Starts every background worker and the metrics endpoint: the one list
    /// of what runs beside the gRPC server (the callback server starts with
    /// its listener in [`App::serve`]).
    fn start_workers(
        &self,
        tasks: &Tasks,
        reporter: &HealthReporter,
        draining: &CancellationToken,
        notifications: bool,
        metrics: Option<TcpListener>,
    ) {
        let (services, tenants) = (&self.services, &self.tenants);
        workers::spawn(
            tasks,
            StoreWatcher {
                store: services.store().clone(),
                credentials: services.credentials.clone(),
                reporter: reporter.clone(),
                draining: draining.clone(),
            },
        );
        workers::spawn(
            tasks,
            RevocationRetrier {
                connect: services.connect.clone(),
                tenants: tenants.clone(),
                interval: self.revoke_retry_interval,
            },
        );
        workers::spawn(
            tasks,
            QueueWorker {
                queue: services.queue.clone(),
                tenants: tenants.clone(),
            },
        );
        workers::spawn(
            tasks,
            ErasureFinisher {
                erasure: services.erasure.clone(),
                tenants: tenants.clone(),
                interval: self.erasure_retry_interval,
            },
        );
        workers::spawn(
            tasks,
            RetentionPruner {
                changes: services.changes.clone(),
                erasure: services.erasure.clone(),
                interval: self.changes.prune_interval,
            },
        );
        workers::spawn(
            tasks,
            BackgroundRefresher {
                credentials: services.credentials.clone(),
                tenants: tenants.clone(),
                interval: self.refresh_ahead_interval,
            },
        );
        if services.store().is_shared() {
            workers::spawn(
                tasks,
                ChangeFeedPoller {
                    store: services.store().clone(),
                    interval: self.changes.poll_interval,
                },
            );
        }
        if notifications {
            workers::spawn(
                tasks,
                NotificationWorker {
                    changes: services.changes.clone(),
                    tenants: tenants.clone(),
                },
            );
        }
        if let Some(metrics) = metrics {
            tasks.spawn_worker(
                "metrics server",
                metrics_endpoint::serve_metrics(
                    metrics,
                    services.store().clone(),
                    self.tenants.keys().cloned().collect(),
                    tasks.shutdown(),
                ),
            );
        }
    }

    /// Serves gRPC, metrics and callbacks on `listeners` until `shutdown`
    /// resolves; then reports NOT_SERVING at once and keeps serving for
    /// `drain_delay` (load balancers and clients move away meanwhile), stops
    /// accepting, lets in-flight calls and every tracked task finish within
    /// `shutdown_grace`, and writes refreshed token pairs the store refused
    /// earlier a last time.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let tasks = self.tasks.clone();
        for (index, key_id) in self.services.store().key_ids().into_iter().enumerate() {
            let role = if index == 0 { "encrypt" } else { "decrypt" };
            METRICS
                .encryption_keys
                .get_or_create(&KeyRoleLabels {
                    key_id,
                    role: role.to_owned(),
                })
                .set(1);
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::Serving).await;
        reporter.set_service_status(LIVENESS_NAME, ServingStatus::Serving).await;

        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let api = InterceptedService::new(
            CalendarWriteServiceServer::new(CalendarWriteApi::new(self.services.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            AuthInterceptor::new(self.authenticator.clone(), self.grpc.tenant_calls_in_flight),
        );
        let grpc = self.grpc;
        let mut builder = Server::builder()
            .max_concurrent_streams(grpc.max_concurrent_streams)
            .initial_stream_window_size(grpc.stream_window_bytes)
            .initial_connection_window_size(grpc.connection_window_bytes)
            .http2_keepalive_interval(Some(grpc.keepalive_interval))
            .http2_keepalive_timeout(Some(grpc.keepalive_timeout))
            .http2_max_pending_accept_reset_streams(Some(grpc.max_pending_accept_reset_streams))
            .http2_max_local_error_reset_streams(Some(grpc.max_local_error_reset_streams))
            .layer(RpcLayer)
            .layer(DeadlineLayer)
            .layer(DecodeBudgetLayer::new(grpc.max_decoding_bytes))
            .layer(RequestReadDeadlineLayer::new(
                grpc.request_read_timeout,
                REFLECTION_PATHS,
            ));
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(listeners::tls_config(tls).await?)?;
        }
        let callbacks = match (&self.callbacks, listeners.callbacks) {
            (Some(settings), Some(listener)) => Some((listener, settings.limits)),
            (Some(_), None) => {
                return Err(StartError::NoListener {
                    key: "callbacks.listen",
                });
            }
            (None, _) => None,
        };

        // Cancelled at SIGTERM: health stays NOT_SERVING from then on.
        let draining = CancellationToken::new();
        self.start_workers(&tasks, &reporter, &draining, callbacks.is_some(), listeners.metrics);
        if let Some((listener, limits)) = callbacks {
            tasks.spawn_worker(
                "callback server",
                crate::callbacks::serve(
                    listener,
                    self.services.clone(),
                    self.tenants.clone(),
                    limits,
                    tasks.shutdown(),
                ),
            );
        }
        let local_addr = listeners.grpc.local_addr().ok();
        let incoming = connections::limit(
            TcpIncoming::from(listeners.grpc)
                .with_nodelay(Some(true))
                .with_keepalive(Some(TCP_KEEPALIVE)),
            grpc.max_connections as usize,
        );
        // One cap for both reflection versions: a peer could use either.
        let reflection_cap = StreamCap::new(
            (),
            grpc.max_reflection_streams as usize,
            ("grpc.max_reflection_streams", "reflection_streams"),
            Some(grpc.reflection_stream_lifetime),
        );
        let stop_serving = tasks.shutdown();
        let server = builder
            .add_service(
                StreamCap::new(
                    health,
                    grpc.max_health_watches as usize,
                    ("grpc.max_health_watches", "health_watches"),
                    None,
                )
                .only("Watch"),
            )
            .add_service(reflection_cap.wrap(reflection_v1))
            .add_service(reflection_cap.wrap(reflection_v1alpha))
            .add_service(api)
            .serve_with_incoming_shutdown(incoming, async move {
                stop_serving.cancelled().await;
                info!("shutting down: no longer accepting calls, draining those in flight");
            });
        info!(addr = ?local_addr, tls = self.tls.is_some(), "calgate serving gRPC");

        let grace = self.shutdown_grace;
        tokio::pin!(server, shutdown);
        let served = tokio::select! {
            // The server only ends on its own when it fails.
            result = &mut server => result.map_err(StartError::from),
            () = &mut shutdown => {
                draining.cancel();
                set_health(&reporter, ServingStatus::NotServing).await;
                info!(
                    drain_delay = ?self.drain_delay,
                    "shutting down: health NOT_SERVING; serving on for the drain delay while callers move to other replicas"
                );
                match tokio::time::timeout(self.drain_delay, &mut server).await {
                    // The server failed during the delay.
                    Ok(result) => result.map_err(StartError::from),
                    Err(_) => {
                        tasks.stop();
                        match tokio::time::timeout(grace, &mut server).await {
                            Ok(result) => result.map_err(StartError::from),
                            Err(_) => {
                                warn!(?grace, "shutdown grace expired; abandoning calls still in flight");
                                Ok(())
                            }
                        }
                    }
                }
            }
        };
        let stopping_since = tokio::time::Instant::now();
        tasks.stop();
        tasks.drain(grace.saturating_sub(stopping_since.elapsed())).await;
        // Which grants calls used since the last round (the background refresher's "used recently").
        self.services.credentials.record_usage().await;
        for (tenant, sub) in self.services.credentials.flush_pending_tokens().await {
            error!(
                %tenant,
                sub,
                "refreshed tokens the store refused could not be written before exit: kept in store.spill_dir \
                 when set (written at the next start), else lost and the grant may need re-authorization"
            );
        }
        info!("calgate stopped");
        served
    }
}

/// Reflection over calgate.v1, the health service and google.rpc error details,
/// so grpcurl can describe everything and decode error details.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        () = terminate => info!("SIGTERM received"),
    }
}
