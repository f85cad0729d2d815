//! The `calgate` binary: parse the command line, load config, run.

use std::{io::Read, path::PathBuf, process::ExitCode};

use calgate::{
    auth::hash_api_key,
    config::Settings,
    server::{App, Listeners, shutdown_signal},
    telemetry,
};
use clap::{Parser, Subcommand};

use calgate::operations;

/// mimalloc: per-thread heaps without glibc's arena locks, which the two
/// runtime workers contended for when one freed what the other allocated
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// calgate: write events into users' calendars through Cronofy's Read-Write access mode.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC service.
    Serve {
        /// Config file (TOML); `CALGATE_…` environment variables override its keys.
        #[arg(long, env = "CALGATE_CONFIG")]
        config: PathBuf,
    },
    /// Run the service against an embedded fake Cronofy (offline development; never a real Cronofy).
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Config file (TOML); each tenant's Cronofy hosts are replaced by the fake's.
        /// Without one: a `demo` tenant with a fresh API key (printed), in memory.
        #[arg(long, env = "CALGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file, load its secrets, and print a summary without them.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, env = "CALGATE_CONFIG")]
        config: PathBuf,
    },
    /// Apply pending store migrations and exit (for operators who migrate before a rollout).
    Migrate {
        /// Config file (TOML); only `store` and `encryption` are used.
        #[arg(long, env = "CALGATE_CONFIG")]
        config: PathBuf,
    },
    /// Re-encrypt every stored ciphertext under the first configured key, while replicas serve.
    /// Exits 0 only when nothing remains under another key: then the others can be removed.
    Rekey {
        /// Config file (TOML); `store` and `encryption` are used.
        #[arg(long, env = "CALGATE_CONFIG")]
        config: PathBuf,
    },
    /// Offboard a tenant: revoke its grants at Cronofy, close its channels, delete its rows.
    /// Its audit trail stays, with people's ids replaced by keyed hashes.
    PurgeTenant {
        /// Config file (TOML); the tenant must still be configured (its client credentials revoke).
        #[arg(long, env = "CALGATE_CONFIG")]
        config: PathBuf,
        /// The tenant's id.
        tenant_id: String,
    },
    /// Print a tenant's audit trail as JSON lines, and check its hash chain.
    Audit {
        /// Config file (TOML); `store` and `encryption` are used.
        #[arg(long, env = "CALGATE_CONFIG")]
        config: PathBuf,
        /// The tenant's id.
        #[arg(long)]
        tenant: String,
        /// Only rows recorded at or after this instant (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only rows about this user_ref (found by its keyed hash, also after it was erased).
        #[arg(long)]
        user_ref: Option<String>,
        /// Only rows about this sub (found by its keyed hash, also after it was erased).
        #[arg(long)]
        sub: Option<String>,
        /// Check the tenant's whole chain; exit 1 if a row was edited, removed,
        /// inserted or written without the audit key, or the pruning mark is not calgate's.
        #[arg(long)]
        verify: bool,
        /// With --verify: rows up to this number may carry plain SHA-256 hashes
        /// (recorded before calgate keyed its chains).
        #[arg(long, default_value_t = 0)]
        unkeyed_through: i64,
        /// With --verify: a head printed by --head earlier (a file); exit 1 if
        /// the chain no longer holds it.
        #[arg(long)]
        expect_head: Option<PathBuf>,
        /// Print the chain's head, signed with the audit key, as one JSON line
        /// (keep it elsewhere; check it later with --verify --expect-head).
        #[arg(long, conflicts_with = "verify")]
        head: bool,
    },
    /// Print the SHA-256 of an API key read from standard input, for `api_key_sha256`.
    HashKey,
    /// Run the fake Cronofy used by the tests (loopback only, never a real Cronofy).
    #[cfg(feature = "sandbox")]
    FakeCronofy {
        /// Address of the browser-facing (app) host.
        #[arg(long, default_value = "127.0.0.1:0")]
        app_listen: std::net::SocketAddr,
        /// Address of the API host.
        #[arg(long, default_value = "127.0.0.1:0")]
        api_listen: std::net::SocketAddr,
        /// OAuth client id to accept.
        #[arg(long)]
        client_id: String,
        /// Environment variable holding that client's secret.
        #[arg(long)]
        client_secret_env: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("calgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("calgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let settings = Settings::load(&config)?;
            let _telemetry = telemetry::init(&settings.log);
            let listeners = Listeners::bind(&settings).await?;
            let app = App::build(settings).await?;
            app.serve(listeners, shutdown_signal()).await?;
            Ok(())
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox { config } => {
            let settings = match config {
                Some(config) => Settings::load(&config)?,
                None => {
                    let (settings, api_key) = calgate::sandbox::demo_settings()?;
                    println!(
                        "calgate sandbox on {} (offline: an embedded fake Cronofy consents at once)",
                        settings.listen
                    );
                    println!("  tenant        demo");
                    println!("  API key       {api_key}");
                    println!("  redirect_uri  {}", calgate::sandbox::DEMO_REDIRECT_URI);
                    println!("  try           grpcurl -plaintext -H 'authorization: Bearer {api_key}' \\");
                    println!(
                        "                  -d '{{\"redirect_uri\":\"{}\"}}' {} calgate.v1.CalendarWriteService/BuildAuthorizeUrl",
                        calgate::sandbox::DEMO_REDIRECT_URI,
                        settings.listen
                    );
                    settings
                }
            };
            let _telemetry = telemetry::init(&settings.log);
            calgate::sandbox::run(settings, shutdown_signal()).await
        }
        Command::CheckConfig { config } => {
            let settings = Settings::load(&config)?;
            println!("config OK: {}", config.display());
            println!("  listen          {}", settings.listen);
            println!("  store.url       {}", redact_url(&settings.store.url));
            let key_ids: Vec<&str> = settings.encryption_keys.iter().map(|k| k.id.as_str()).collect();
            println!(
                "  encryption keys {} (encrypting with `{}`)",
                key_ids.join(", "),
                key_ids[0]
            );
            let state_ids: Vec<&str> = settings.state_keys.iter().map(|k| k.id.as_str()).collect();
            println!(
                "  state keys      {} (sealing with `{}`)",
                state_ids.join(", "),
                state_ids[0]
            );
            println!(
                "  audit retention {:.1} days",
                settings.audit.retention.as_secs_f64() / 86_400.0
            );
            for tenant in &settings.tenants {
                println!(
                    "  tenant {:<12} data_center={} api keys={} redirect_uris={}",
                    tenant.id,
                    tenant.data_center,
                    tenant.api_key_sha256.len(),
                    tenant.redirect_uris.len()
                );
            }
            for (application, tenants) in settings.shared_applications() {
                println!(
                    "  application {application} is shared by tenants {}:",
                    tenants.join(", ")
                );
                println!("    - events: each tenant writes under its own event ids (the first keeps callers' ids)");
                println!(
                    "    - DeleteAllEvents and ForgetUser(delete_events) delete the tenant's recorded events by id,"
                );
                println!(
                    "      50 a batch, from the shared budget (events written before calgate recorded writes stay)"
                );
                println!("    - revocation: Cronofy is asked only when no other tenant holds the account");
                println!("    - budget and breaker are shared: waiting callers are served by tenant in turn");
            }
            Ok(())
        }
        Command::Migrate { config } => {
            let mut settings = Settings::load(&config)?;
            let _telemetry = telemetry::init(&settings.log);
            // Connecting with auto_migrate applies what is pending, whatever the file says.
            settings.store.auto_migrate = true;
            calgate::store::Store::connect(&settings.store, &settings.encryption_keys).await?;
            println!("store migrated: {}", redact_url(&settings.store.url));
            Ok(())
        }
        Command::Rekey { config } => operations::rekey(Settings::load(&config)?).await,
        Command::PurgeTenant { config, tenant_id } => {
            operations::purge_tenant(Settings::load(&config)?, &tenant_id).await
        }
        Command::Audit {
            config,
            tenant,
            since,
            user_ref,
            sub,
            verify,
            unkeyed_through,
            expect_head,
            head,
        } => {
            let since = since
                .map(|since| time::OffsetDateTime::parse(&since, &time::format_description::well_known::Rfc3339))
                .transpose()
                .map_err(|_| anyhow::anyhow!("--since must be an RFC 3339 instant, such as 2026-01-31T00:00:00Z"))?;
            let query = calgate::store::AuditQuery { since, user_ref, sub };
            let check = operations::AuditCheck {
                verify,
                unkeyed_through,
                expect_head,
                head,
            };
            operations::audit(Settings::load(&config)?, &tenant, query, check).await
        }
        Command::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key)?;
            let key = key.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!key.is_empty(), "no API key on standard input");
            println!("{}", hex::encode(hash_api_key(key)));
            Ok(())
        }
        #[cfg(feature = "sandbox")]
        Command::FakeCronofy {
            app_listen,
            api_listen,
            client_id,
            client_secret_env,
        } => {
            calgate::sandbox::serve_fake_cronofy(
                app_listen,
                api_listen,
                &client_id,
                &client_secret_env,
                shutdown_signal(),
            )
            .await
        }
    }
}

/// A store URL without its password, for printing.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
