//! `calgate sandbox`: calgate with the fake Cronofy embedded, so consumer
//! teams can develop and test offline. Every tenant's Cronofy hosts are
//! replaced by the fake's, and its OAuth client is registered there; nothing
//! ever reaches a real Cronofy host.

use std::{collections::HashMap, future::Future};

use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::ExposeSecret;
use tracing::info;
use url::Url;

use crate::{
    auth::hash_api_key,
    config::{ConfigError, SecretSource, Settings},
    server::{App, Listeners},
};
use fake_cronofy::FakeCronofy;

/// The redirect URI of the built-in demo tenant.
pub const DEMO_REDIRECT_URI: &str = "http://localhost:3000/cronofy/callback";

/// Settings for a sandbox without a config file: one `demo` tenant whose API
/// key is made now (and returned, to be printed), fresh keys, an in-memory store.
pub fn demo_settings() -> Result<(Settings, String), ConfigError> {
    let api_key = format!("sandbox-{}", hex::encode(rand::random::<[u8; 16]>()));
    let toml = format!(
        r#"
listen = "127.0.0.1:50051"
metrics_listen = "127.0.0.1:9090"
[store]
url = "sqlite::memory:"
[state]
signing_key_env = "STATE_KEY"
[encryption]
keys = [{{ id = "k1", key_env = "K1" }}]
[log]
format = "text"
[callbacks]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
[[tenants]]
id = "demo"
api_key_sha256 = ["{digest}"]
client_id = "demo-client"
client_secret_env = "DEMO_SECRET"
redirect_uris = ["{DEMO_REDIRECT_URI}"]
"#,
        digest = hex::encode(hash_api_key(&api_key)),
    );
    let secrets = SecretSource::Map(HashMap::from([
        ("STATE_KEY".to_owned(), STANDARD.encode(rand::random::<[u8; 32]>())),
        ("K1".to_owned(), STANDARD.encode(rand::random::<[u8; 32]>())),
        ("DEMO_SECRET".to_owned(), hex::encode(rand::random::<[u8; 16]>())),
    ]));
    Ok((Settings::from_toml_str(&toml, &secrets)?, api_key))
}

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
    info!(
        "to play a user (needs [callbacks]): POST {app}sandbox/accounts/<sub>/events/delete {{\"calendar_id\",\"event_id\"}}, \
         …/events/edit {{\"calendar_id\",\"event_id\",\"start\",\"end\",\"summary\"}}, …/profile/disconnect, …/profile/reconnect"
    );
    // One process on a developer's machine: nobody to drain toward.
    settings.drain_delay = std::time::Duration::ZERO;
    let listeners = Listeners::bind(&settings).await?;
    App::build(settings).await?.serve(listeners, shutdown).await?;
    Ok(())
}

/// `calgate fake-cronofy`: the fake alone on `app_listen` and `api_listen`
/// (loopback), accepting one OAuth client whose secret is read from the
/// environment variable `client_secret_env`, until `shutdown` resolves. One
/// JSON line on stdout tells scripts where it listens.
pub async fn serve_fake_cronofy(
    app_listen: std::net::SocketAddr,
    api_listen: std::net::SocketAddr,
    client_id: &str,
    client_secret_env: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let _telemetry = crate::telemetry::init(&crate::telemetry::LogSettings {
        json: false,
        level: "info".into(),
    });
    let secret = std::env::var(client_secret_env)
        .map_err(|_| anyhow::anyhow!("environment variable `{client_secret_env}` is not set"))?;
    let app = tokio::net::TcpListener::bind(app_listen).await?;
    let api = tokio::net::TcpListener::bind(api_listen).await?;
    let fake = FakeCronofy::serve(app, api)?;
    fake.register_client(client_id, &secret);
    println!(
        "{}",
        serde_json::json!({"app_base_url": fake.app_base_url(), "api_base_url": fake.api_base_url()})
    );
    shutdown.await;
    Ok(())
}
