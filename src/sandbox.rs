//! `calgate sandbox`: calgate with the fake Cronofy embedded, so consumer
//! teams can develop and test offline. Every tenant's Cronofy hosts are
//! replaced by the fake's, and its OAuth client is registered there; nothing
//! ever reaches a real Cronofy host.

use std::future::Future;

use secrecy::ExposeSecret;
use tracing::info;
use url::Url;

use crate::{
    config::Settings,
    fake_cronofy::FakeCronofy,
    server::{App, StartError},
};

/// Serves `settings` against an embedded fake Cronofy until `shutdown` resolves.
pub async fn run(mut settings: Settings, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let fake = FakeCronofy::start().await?;
    let api = Url::parse(&fake.api_base_url())?;
    let app = Url::parse(&fake.app_base_url())?;
    for tenant in &mut settings.tenants {
        fake.register_client(&tenant.client_id, tenant.client_secret.expose_secret());
        tenant.api_base_url = Some(api.clone());
        tenant.app_base_url = Some(app.clone());
        info!(tenant = %tenant.id, "sandbox tenant uses the embedded fake Cronofy");
    }
    info!(api = %api, app = %app, "embedded fake Cronofy listening");
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on `listen` = {}: {error}", settings.listen))?;
    let metrics = tokio::net::TcpListener::bind(settings.metrics_listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on `metrics_listen` = {}: {error}",
                settings.metrics_listen
            )
        })?;
    let served: Result<(), StartError> = App::build(settings)
        .await?
        .serve(listener, Some(metrics), shutdown)
        .await;
    served?;
    Ok(())
}
