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
use fake_cronofy::FakeCronofy;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, Status, Streaming, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_types::StatusExt;

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
    /// Stops the server and hands back the fake and files for a restart.
    pub async fn stop(mut self) -> (FakeCronofy, Workdir) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
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

pub fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().expect("metadata"));
    request
}

/// One UpsertEvent as the tests send it: `event(event_id)` (default
/// `evt-1`) for a user on a calendar, as acme, with an optional deadline. The
/// one place such a request is built.
pub struct Upsert {
    user: Option<pb::upsert_event_request::User>,
    calendar_id: String,
    event_id: String,
    timeout: Option<String>,
}

impl Upsert {
    /// `event("evt-1")` for `user` on `calendar_id`.
    pub fn new(user: Option<pb::upsert_event_request::User>, calendar_id: impl Into<String>) -> Upsert {
        Upsert {
            user,
            calendar_id: calendar_id.into(),
            event_id: "evt-1".into(),
            timeout: None,
        }
    }

    /// For the grant `sub`, on its first calendar at the fake.
    pub fn first_calendar(fake: &FakeCronofy, sub: &str) -> Upsert {
        Upsert::new(by_sub(sub), fake.calendar_ids(sub)[0].clone())
    }

    /// Another event id.
    pub fn event_id(mut self, event_id: &str) -> Upsert {
        self.event_id = event_id.into();
        self
    }

    /// A `grpc-timeout` (e.g. `300m`), when given.
    pub fn timeout(mut self, timeout: Option<&str>) -> Upsert {
        self.timeout = timeout.map(str::to_owned);
        self
    }

    /// The request, with acme's key.
    pub fn request(&self) -> Request<pb::UpsertEventRequest> {
        let mut request = with_key(
            ACME_KEY,
            pb::UpsertEventRequest {
                user: self.user.clone(),
                calendar_id: self.calendar_id.clone(),
                event: Some(event(&self.event_id)),
            },
        );
        if let Some(timeout) = &self.timeout {
            request
                .metadata_mut()
                .insert("grpc-timeout", timeout.parse().expect("grpc-timeout"));
        }
        request
    }

    /// Sends it.
    pub async fn send(&self, client: &CalendarWriteServiceClient<Channel>) -> Result<(), Status> {
        client.clone().upsert_event(self.request()).await.map(drop)
    }
}

/// AuthorizeEnterpriseUser for `email` as `user_ref`, through the service
/// account bound to `org_ref`, with the default scope.
pub fn member_request(org_ref: &str, email: &str, user_ref: &str) -> pb::AuthorizeEnterpriseUserRequest {
    pb::AuthorizeEnterpriseUserRequest {
        service_account: Some(pb::authorize_enterprise_user_request::ServiceAccount::ServiceAccountRef(org_ref.into())),
        email: email.into(),
        user_ref: user_ref.into(),
        scope: vec![],
    }
}

pub fn by_sub(sub: &str) -> Option<pb::upsert_event_request::User> {
    Some(pb::upsert_event_request::User::Sub(sub.into()))
}

/// A valid one-hour event.
pub fn event(event_id: &str) -> pb::Event {
    pb::Event {
        event_id: event_id.into(),
        summary: "Design review".into(),
        start: Some(at(1_780_000_000)),
        end: Some(at(1_780_003_600)),
        ..Default::default()
    }
}

pub fn at(seconds: i64) -> pb::EventTime {
    pb::EventTime {
        value: Some(pb::event_time::Value::Time(prost_types::Timestamp {
            seconds,
            nanos: 0,
        })),
        tzid: None,
    }
}

/// Asserts a status's code and ErrorInfo reason (domain calgate).
#[track_caller]
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "calgate");
}

/// A caller whose deadline passed has given up: it heard calgate's
/// DEADLINE_EXCEEDED or, on a loaded machine, its own gRPC stack's timer first
/// (tonic: CANCELLED "Timeout expired"). For tests whose point is what happens
/// after the caller left; `upstream::the_callers_deadline_is_respected` asserts
/// DEADLINE_EXCEEDED itself.
#[track_caller]
pub fn assert_gave_up(status: &Status) {
    let gave_up = status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message() == "Timeout expired");
    assert!(gave_up, "{status:?}");
}

/// The BadRequest field paths of an INVALID_ARGUMENT status.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// The health status of `service` (`""` for the server) over `channel`, within 2 s.
pub async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, Status> {
    let mut request = Request::new(HealthCheckRequest {
        service: service.into(),
    });
    request.set_timeout(Duration::from_secs(2));
    let status = HealthClient::new(channel.clone())
        .check(request)
        .await?
        .into_inner()
        .status;
    Ok(ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown))
}

/// Polls `service`'s health until it is `want`; false after `within`.
pub async fn health_becomes(channel: &Channel, service: &str, want: ServingStatus, within: Duration) -> bool {
    let give_up = tokio::time::Instant::now() + within;
    loop {
        if health(channel, service).await.ok() == Some(want) {
            return true;
        }
        if tokio::time::Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GetGrant by sub with `key`'s tenant.
pub async fn fetch_grant(
    client: &CalendarWriteServiceClient<Channel>,
    key: &str,
    sub: &str,
) -> Result<pb::Grant, Status> {
    let request = with_key(
        key,
        pb::GetGrantRequest {
            user: Some(pb::get_grant_request::User::Sub(sub.into())),
        },
    );
    Ok(client
        .clone()
        .get_grant(request)
        .await?
        .into_inner()
        .grant
        .expect("grant"))
}

/// Longest a test waits for a change it knows is coming (a bound on a hang,
/// not a measure of speed: latency is in docs/benchmarks.md).
pub const ARRIVAL: Duration = Duration::from_secs(20);

/// WatchChanges as `key`'s tenant, after the cursor `after` (empty: from now on).
pub async fn watch(
    client: &CalendarWriteServiceClient<Channel>,
    key: &str,
    after: &str,
) -> Result<Streaming<pb::Change>, Status> {
    client
        .clone()
        .watch_changes(with_key(key, pb::WatchChangesRequest { after: after.into() }))
        .await
        .map(tonic::Response::into_inner)
}

/// The next change on the stream, failing the test if none comes.
pub async fn next(stream: &mut Streaming<pb::Change>) -> pb::Change {
    tokio::time::timeout(ARRIVAL, stream.message())
        .await
        .expect("a change arrives")
        .expect("the stream is healthy")
        .expect("the stream is open")
}

/// RevokeGrant of the grant bound to `user_ref`.
pub fn revoke_by_ref(user_ref: &str) -> pb::RevokeGrantRequest {
    pb::RevokeGrantRequest {
        user: Some(pb::revoke_grant_request::User::UserRef(user_ref.into())),
        profile_id: None,
    }
}
