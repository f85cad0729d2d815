//! The real `calgate` binary as a child process: its config written to a
//! work folder, its logs collected, its gRPC client, SIGTERM and exit code.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use calgate::grpc::pb::{self, calendar_write_service_client::CalendarWriteServiceClient};
use fake_cronofy::FakeCronofy;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use super::{app::*, requests::*};

pub struct Binary {
    child: Child,
    pub client: CalendarWriteServiceClient<Channel>,
    pub channel: Channel,
    /// Where its gRPC port listens.
    pub addr: std::net::SocketAddr,
    /// Where its `GET /metrics` listens.
    pub metrics: std::net::SocketAddr,
    logs: Arc<Mutex<String>>,
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, logs: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut logs = logs.lock().unwrap_or_else(|p| p.into_inner());
            logs.push_str(&line);
            logs.push('\n');
        }
    });
}

pub async fn start_binary(fake: &FakeCronofy, work: &Workdir) -> Binary {
    start_binary_with(fake, work, |_| {}).await
}

/// Starts the real binary with the test config edited by `edit` (e.g. a PostgreSQL store).
pub async fn start_binary_with(fake: &FakeCronofy, work: &Workdir, edit: impl FnOnce(&mut toml::Table)) -> Binary {
    start_binary_env(fake, work, edit, &[]).await
}

/// The test config as a TOML table, edited by `edit`, written to a new file.
pub fn write_config(fake: &FakeCronofy, work: &Workdir, edit: impl FnOnce(&mut toml::Table)) -> std::path::PathBuf {
    let mut config: toml::Table = work
        .config(fake, &work.key("k1"))
        .parse()
        .expect("the test config is TOML");
    edit(&mut config);
    let path = work.path(&format!("calgate-{}.toml", rand::random::<u64>()));
    std::fs::write(&path, config.to_string()).expect("config");
    path
}

/// Sets the dotted `path` of a TOML config. Panics when a parent table is
/// missing, so an edit cannot silently do nothing; calgate refuses unknown
/// keys, so a misspelt last key fails too.
pub fn set(config: &mut toml::Table, path: &str, value: impl Into<toml::Value>) {
    let (parents, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut table = config;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        let next = table
            .get_mut(part)
            .unwrap_or_else(|| panic!("no `{part}` in the test config (setting `{path}`)"));
        table = next
            .as_table_mut()
            .unwrap_or_else(|| panic!("`{part}` is not a table (setting `{path}`)"));
    }
    table.insert(key.to_owned(), value.into());
}

/// Sets `key` (dotted below the tenant) in the first tenant's table.
pub fn set_in_first_tenant(config: &mut toml::Table, key: &str, value: impl Into<toml::Value>) {
    let first = config
        .get_mut("tenants")
        .and_then(toml::Value::as_array_mut)
        .and_then(|tenants| tenants.first_mut())
        .and_then(toml::Value::as_table_mut)
        .expect("a first tenant in the test config");
    set(first, key, value);
}

/// Starts the real binary with an edited config and extra environment
/// variables. It listens on port 0; the addresses come from its own log.
pub async fn start_binary_env(
    fake: &FakeCronofy,
    work: &Workdir,
    edit: impl FnOnce(&mut toml::Table),
    env: &[(&str, &str)],
) -> Binary {
    let path = write_config(fake, work, edit);
    let mut child = Command::new(env!("CARGO_BIN_EXE_calgate"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start calgate");
    let logs = Arc::new(Mutex::new(String::new()));
    collect(child.stdout.take().expect("stdout"), logs.clone());
    collect(child.stderr.take().expect("stderr"), logs.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (grpc, metrics) = loop {
        let seen = logs.lock().map(|l| l.clone()).unwrap_or_default();
        if let (Some(grpc), Some(metrics)) = (
            logged_addr(&seen, "calgate serving gRPC"),
            logged_addr(&seen, "metrics at GET /metrics"),
        ) {
            break (grpc, metrics);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calgate did not log its addresses: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect_lazy();
    let mut health = HealthClient::new(channel.clone());
    loop {
        let request = HealthCheckRequest {
            service: "calgate.v1.CalendarWriteService".into(),
        };
        if let Ok(response) = health.check(request).await
            && response.into_inner().status == ServingStatus::Serving as i32
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calgate did not become SERVING: {}",
            logs.lock().map(|l| l.clone()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Binary {
        child,
        client: CalendarWriteServiceClient::new(channel.clone()),
        channel,
        addr: grpc,
        metrics,
        logs,
    }
}

/// The `addr=Some(…)` of the first log line carrying `message`.
fn logged_addr(logs: &str, message: &str) -> Option<std::net::SocketAddr> {
    let line = logs.lines().find(|line| line.contains(message))?;
    let rest = &line[line.find("addr=Some(")? + "addr=Some(".len()..];
    rest[..rest.find(')')?].parse().ok()
}

impl Binary {
    /// Kills the process outright, as the kernel's OOM killer or a node loss would.
    pub async fn sigkill(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) {
        self.sigterm();
        assert_eq!(self.exit_code().await, Some(0));
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait")
            .code()
    }

    /// The process's peak resident set so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
    }

    /// The process's resident set now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
    }

    pub fn proc_status_kib(&self, key: &str) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
    }

    /// A channel to its gRPC port.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub async fn connect(&self, user_ref: &str) -> pb::Grant {
        self.connect_to(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            user_ref: Some(user_ref.into()),
            ..Default::default()
        })
        .await
    }

    /// An organisation's admin connects through Enterprise Connect as `org_ref`.
    pub async fn connect_enterprise_admin(&self, org_ref: &str) -> pb::Grant {
        self.connect_to(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            connect_mode: pb::ConnectMode::Enterprise as i32,
            user_ref: Some(org_ref.into()),
            ..Default::default()
        })
        .await
    }

    /// Consent to `request` (acme) and exchange the code.
    pub async fn connect_to(&self, request: pb::BuildAuthorizeUrlRequest) -> pb::Grant {
        self.connect_as(ACME_KEY, request).await
    }

    /// Consent to `request` as the tenant of `key` and exchange the code
    /// (redirected to `request.redirect_uri`).
    pub async fn connect_as(&self, key: &str, request: pb::BuildAuthorizeUrlRequest) -> pb::Grant {
        let expected_user_ref = request.user_ref.clone();
        let redirect_uri = request.redirect_uri.clone();
        let built = self
            .client
            .clone()
            .build_authorize_url(with_key(key, request))
            .await
            .expect("url")
            .into_inner();
        let (code, state) = follow_consent(&built.url).await;
        self.client
            .clone()
            .exchange_code(with_key(
                key,
                pb::ExchangeCodeRequest {
                    code,
                    redirect_uri,
                    state,
                    expected_user_ref,
                },
            ))
            .await
            .expect("exchange")
            .into_inner()
            .grant
            .expect("grant")
    }

    pub async fn upsert(&self, sub: &str, calendar_id: &str) -> Result<(), tonic::Status> {
        Binary::upsert_with(self.client.clone(), sub, calendar_id).await
    }
}

impl Binary {
    pub async fn upsert_with(
        client: CalendarWriteServiceClient<Channel>,
        sub: &str,
        calendar_id: &str,
    ) -> Result<(), tonic::Status> {
        Upsert::new(by_sub(sub), calendar_id).send(&client).await
    }
}

/// A port nothing listens on now. The binary binds what its config names,
/// and `callbacks.public_url` must name a port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A `[callbacks]` table: listen on `port`, Cronofy calls `public_port`
/// (another replica's, when several share one public URL).
pub fn with_callbacks(config: &mut toml::Table, port: u16, public_port: u16) {
    let mut callbacks = toml::Table::new();
    callbacks.insert("listen".into(), format!("127.0.0.1:{port}").into());
    callbacks.insert("public_url".into(), format!("http://127.0.0.1:{public_port}").into());
    config.insert("callbacks".into(), callbacks.into());
}
