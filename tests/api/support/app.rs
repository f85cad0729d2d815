//! spawn_app(): calgate on port 0 with a fresh SQLite file, talking to a fresh
//! fake Cronofy on loopback, plus helpers to drive the OAuth flow.

use std::{net::SocketAddr, path::PathBuf, sync::Once, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use calgate::{
    config::{CallbackLimits, CallbackSettings, SecretSource, Settings},
    domain::Clock,
    grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient},
    server::{App, Listeners},
};
use fake_cronofy::{Endpoint, FakeCronofy};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Request, Status, transport::Channel};

use super::requests::with_key;

pub const ACME_KEY: &str = "acme-test-api-key-0123456789";
pub const GLOBEX_KEY: &str = "globex-test-api-key-9876543210";
pub const ACME_SECRET: &str = "acme-client-secret-value";
pub const GLOBEX_SECRET: &str = "globex-client-secret-value";
pub const ACME_REDIRECT: &str = "https://acme.example/cronofy/callback";
pub const ACME_REDIRECT_2: &str = "https://acme.example/other/callback";
pub const GLOBEX_REDIRECT: &str = "https://globex.example/cb";

/// Logs go to the test output only when TEST_LOG is set.
fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_test_writer()
                .try_init();
        }
    });
}

/// Files (database, keys, secrets) one test app owns.
pub struct Workdir {
    pub dir: TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, content: &str| std::fs::write(dir.path().join(name), content).expect("write secret");
        write("state.key", &STANDARD.encode([7u8; 32]));
        write("k1.key", &STANDARD.encode([1u8; 32]));
        write("k2.key", &STANDARD.encode([2u8; 32]));
        write("acme.secret", &format!("{ACME_SECRET}\n"));
        write("globex.secret", GLOBEX_SECRET);
        Workdir { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("calgate.db")
    }

    /// The test config; `keys` is the encryption.keys array body.
    pub fn config(&self, fake: &FakeCronofy, keys: &str) -> String {
        let p = |name: &str| self.path(name).display().to_string();
        format!(
            r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
shutdown_grace = "5s"
drain_delay = "0s"

[store]
url = "sqlite://{db}"
spill_dir = "{spill}"

[state]
signing_key_file = "{state}"

[encryption]
keys = [{keys}]

# Tests that want the background refresher turn it on; the others count every refresh.
[refresh_ahead]
enabled = false

# ForgetUser(delete_events) waits this long to see the deletes applied (the fake applies them 300 ms later).
[erasure]
confirm_within = "10s"

# Tests that count queue retries set queue.* themselves.
[queue]

[upstream]
request_timeout = "1s"
max_attempts = 2
backoff_base = "10ms"
backoff_max = "50ms"
retry_ceiling = "3s"

[upstream.breaker]
failure_threshold = 1000
cool_down = "1s"

[[tenants]]
id = "acme"
api_key_sha256 = ["{acme_hash}"]
client_id = "acme-client"
client_secret_file = "{acme_secret}"
data_center = "uk"
redirect_uris = ["{ACME_REDIRECT}", "{ACME_REDIRECT_2}"]
api_base_url = "{api}"
app_base_url = "{app}"
rate_limit = {{ per_second = 10000, per_minute = 100000 }}

[[tenants]]
id = "globex"
api_key_sha256 = ["{globex_hash}"]
client_id = "globex-client"
client_secret_file = "{globex_secret}"
data_center = "uk"
redirect_uris = ["{GLOBEX_REDIRECT}"]
api_base_url = "{api}"
app_base_url = "{app}"
rate_limit = {{ per_second = 10000, per_minute = 100000 }}
"#,
            db = p("calgate.db"),
            spill = p("spill"),
            state = p("state.key"),
            acme_hash = hex::encode(calgate::auth::hash_api_key(ACME_KEY)),
            globex_hash = hex::encode(calgate::auth::hash_api_key(GLOBEX_KEY)),
            acme_secret = p("acme.secret"),
            globex_secret = p("globex.secret"),
            api = fake.api_base_url(),
            app = fake.app_base_url(),
        )
    }

    pub fn key(&self, id: &str) -> String {
        format!(
            r#"{{ id = "{id}", key_file = "{}" }}"#,
            self.path(&format!("{id}.key")).display()
        )
    }
}

/// How long [`TestApp::stop`] waits for `serve` to return: the test config's
/// `shutdown_grace` (5 s) plus slack for a loaded machine.
pub const STOP_WITHIN: Duration = Duration::from_secs(15);
/// The test config's `shutdown_grace`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running calgate and its fake Cronofy.
pub struct TestApp {
    pub addr: SocketAddr,
    pub fake: FakeCronofy,
    pub clock: Clock,
    pub client: CalendarWriteServiceClient<Channel>,
    pub channel: Channel,
    pub work: Workdir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    let fake = start_fake().await;
    let work = Workdir::new();
    let keys = work.key("k1");
    spawn_app_on(fake, work, &keys).await
}

/// A fresh fake Cronofy with both test tenants' OAuth clients registered.
pub async fn start_fake() -> FakeCronofy {
    let fake = FakeCronofy::start().await.expect("fake Cronofy");
    fake.register_client("acme-client", ACME_SECRET);
    fake.register_client("globex-client", GLOBEX_SECRET);
    // Production mode: Cronofy redirects only to the URIs registered for the client.
    fake.register_redirect_uris("acme-client", &[ACME_REDIRECT, ACME_REDIRECT_2]);
    fake.register_redirect_uris("globex-client", &[GLOBEX_REDIRECT]);
    fake
}

/// Starts calgate with an existing fake and work directory (restarts, key rotation).
pub async fn spawn_app_on(fake: FakeCronofy, work: Workdir, keys: &str) -> TestApp {
    spawn_app_with(fake, work, keys, "").await
}

/// Starts calgate with `extra` TOML appended to the test config (e.g. a `[tls]` table).
pub async fn spawn_app_with(fake: FakeCronofy, work: Workdir, keys: &str, extra: &str) -> TestApp {
    let config = format!("{}\n{extra}", work.config(&fake, keys));
    spawn_app_from(fake, work, &config, |_| {}, None).await
}

/// Starts calgate with the test settings changed by `edit` (typed: a renamed
/// setting breaks the build instead of silently changing nothing).
pub async fn spawn_app_edited(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let fake = start_fake().await;
    let work = Workdir::new();
    let config = work.config(&fake, &work.key("k1"));
    spawn_app_from(fake, work, &config, edit, None).await
}

/// Starts calgate with an existing fake and work directory, settings changed by `edit` (restarts).
pub async fn spawn_app_on_edited(fake: FakeCronofy, work: Workdir, edit: impl FnOnce(&mut Settings)) -> TestApp {
    let config = work.config(&fake, &work.key("k1"));
    spawn_app_from(fake, work, &config, edit, None).await
}

/// calgate with `[callbacks]` on a port-0 listener it is handed; also returns
/// the callback base URL (`callbacks.public_url`).
pub async fn spawn_app_with_callbacks(edit: impl FnOnce(&mut Settings)) -> (TestApp, String) {
    let fake = start_fake().await;
    let work = Workdir::new();
    let config = work.config(&fake, &work.key("k1"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind callbacks");
    let listen = listener.local_addr().expect("callbacks addr");
    let base = format!("http://{listen}");
    let public_url = url::Url::parse(&base).expect("public url");
    let app = spawn_app_from(
        fake,
        work,
        &config,
        |settings| {
            settings.callbacks = Some(CallbackSettings {
                listen,
                public_url,
                authorization_ttl: Duration::from_secs(7 * 24 * 3600),
                limits: CallbackLimits::default(),
            });
            edit(settings);
        },
        Some(listener),
    )
    .await;
    (app, base)
}

async fn spawn_app_from(
    fake: FakeCronofy,
    work: Workdir,
    config: &str,
    edit: impl FnOnce(&mut Settings),
    callbacks: Option<tokio::net::TcpListener>,
) -> TestApp {
    init_logs();
    let mut settings = Settings::from_toml_str(config, &SecretSource::Process).expect("test config");
    edit(&mut settings);
    let app = App::build(settings).await.expect("build app");
    let clock = app.clock();
    let listeners = Listeners {
        grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        metrics: Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind metrics"),
        ),
        callbacks,
    };
    let addr: SocketAddr = listeners.grpc.local_addr().expect("addr");
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(listeners, async move {
            let _ = stop.await;
        })
        .await
        .expect("serve");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();
    TestApp {
        addr,
        fake,
        clock,
        client: CalendarWriteServiceClient::new(channel.clone()),
        channel,
        work,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// Polls the fake until `endpoint` has been called `count` times (10 s at most).
    pub async fn until_called(&self, endpoint: Endpoint, count: usize) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.fake.count(endpoint) < count {
            assert!(
                tokio::time::Instant::now() < give_up,
                "{endpoint:?} was not called {count} times"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server and hands back the fake and files for a restart.
    /// Asserts a clean exit: `serve` returned Ok (the task did not panic)
    /// within [`STOP_WITHIN`].
    pub async fn stop(mut self) -> (FakeCronofy, Workdir) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(STOP_WITHIN, server)
                .await
                .expect("calgate did not stop within its shutdown grace and drain")
                .expect("calgate's serve failed or panicked");
        }
        let TestApp { fake, work, .. } = self;
        (fake, work)
    }

    /// Completes Individual Connect for acme: authorize URL → consent at the fake → ExchangeCode.
    pub async fn connect(&self, user_ref: Option<&str>) -> pb::Grant {
        self.connect_as(ACME_KEY, ACME_REDIRECT, user_ref)
            .await
            .expect("connect")
    }

    pub async fn connect_as(&self, key: &str, redirect_uri: &str, user_ref: Option<&str>) -> Result<pb::Grant, Status> {
        let (code, state) = self.consent(key, redirect_uri, user_ref).await;
        let response = self
            .client
            .clone()
            .exchange_code(with_key(
                key,
                pb::ExchangeCodeRequest {
                    code,
                    redirect_uri: redirect_uri.into(),
                    state,
                    // As the README asks of tenants: bind the redirect to the session's user.
                    expected_user_ref: user_ref.map(str::to_owned),
                },
            ))
            .await?;
        Ok(response.into_inner().grant.expect("grant"))
    }

    /// Builds an authorize URL and lets the fake consent: returns (code, state).
    pub async fn consent(&self, key: &str, redirect_uri: &str, user_ref: Option<&str>) -> (String, String) {
        self.consent_to(
            key,
            pb::BuildAuthorizeUrlRequest {
                redirect_uri: redirect_uri.into(),
                user_ref: user_ref.map(str::to_owned),
                ..Default::default()
            },
        )
        .await
    }

    /// Consent to any authorize request: returns (code, state).
    pub async fn consent_to(&self, key: &str, request: pb::BuildAuthorizeUrlRequest) -> (String, String) {
        let built = self
            .client
            .clone()
            .build_authorize_url(with_key(key, request))
            .await
            .expect("authorize url")
            .into_inner();
        follow_consent(&built.url).await
    }

    /// The calendars of acme's user `user_ref`, through ListCalendars.
    pub async fn calendars(&self, user_ref: &str) -> Vec<pb::Calendar> {
        self.client
            .clone()
            .list_calendars(self.req(pb::ListCalendarsRequest {
                user: Some(pb::list_calendars_request::User::UserRef(user_ref.into())),
            }))
            .await
            .expect("list calendars")
            .into_inner()
            .calendars
    }

    /// An organisation's admin connects acme through Enterprise Connect as `org_ref`.
    pub async fn connect_enterprise_admin(&self, org_ref: &str) -> pb::Grant {
        let request = pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            connect_mode: pb::ConnectMode::Enterprise as i32,
            user_ref: Some(org_ref.into()),
            ..Default::default()
        };
        let (code, state) = self.consent_to(ACME_KEY, request).await;
        let exchange = pb::ExchangeCodeRequest {
            code,
            redirect_uri: ACME_REDIRECT.into(),
            state,
            expected_user_ref: None,
        };
        let response = self
            .client
            .clone()
            .exchange_code(self.req(exchange))
            .await
            .expect("exchange");
        response.into_inner().grant.expect("grant")
    }

    pub fn req<T>(&self, message: T) -> Request<T> {
        with_key(ACME_KEY, message)
    }
}

/// Opens a consent URL at the fake and reads code and state from the redirect.
pub async fn follow_consent(url: &str) -> (String, String) {
    // reqwest is built without a default TLS provider (calgate installs ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client");
    let response = http.get(url).send().await.expect("consent page");
    assert_eq!(response.status().as_u16(), 302, "the fake redirects after consent");
    let location = response.headers()["location"].to_str().expect("location").to_owned();
    let location = url::Url::parse(&location).expect("redirect URL");
    let param = |name: &str| {
        location
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .expect(name)
    };
    (param("code"), param("state"))
}
