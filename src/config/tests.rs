//! Config rules: every error names its key.

use std::collections::HashMap;

use secrecy::ExposeSecret;

use super::*;

const KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 × 0x01

fn secrets() -> SecretSource {
    SecretSource::Map(HashMap::from([
        ("STATE_KEY".to_owned(), KEY.to_owned()),
        ("K1".to_owned(), KEY.to_owned()),
        ("ACME_SECRET".to_owned(), "s3cret".to_owned()),
        ("SHORT".to_owned(), "c2hvcnQ=".to_owned()),
    ]))
}

fn config(tenant_extra: &str, top_extra: &str) -> String {
    format!(
        r#"
{top_extra}
[store]
url = "sqlite::memory:"
[state]
signing_key_env = "STATE_KEY"
[encryption]
keys = [{{ id = "k1", key_env = "K1" }}]
[[tenants]]
id = "acme"
api_key_sha256 = ["2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"]
client_id = "acme-client"
client_secret_env = "ACME_SECRET"
redirect_uris = ["https://acme.example/cb"]
{tenant_extra}
"#
    )
}

fn settings_of(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml_str(text, &secrets())
}

fn error_of(text: &str) -> String {
    match Settings::from_toml_str(text, &secrets()) {
        Ok(_) => panic!("config was accepted"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_minimal_config_gets_the_contract_defaults() {
    let settings = Settings::from_toml_str(&config("", ""), &secrets()).expect("valid");
    assert_eq!(settings.listen.to_string(), "0.0.0.0:50051");
    assert_eq!(settings.metrics_listen.to_string(), "0.0.0.0:9090");
    assert_eq!(settings.state_ttl, Duration::from_secs(900));
    assert_eq!(settings.refresh_margin, Duration::from_secs(300));
    assert_eq!(settings.shutdown_grace, Duration::from_secs(20));
    assert_eq!(settings.tenants[0].data_center, DataCenter::Us);
    assert_eq!(
        settings.tenants[0].rate_limit,
        RateLimit {
            per_second: 50,
            per_minute: 500
        }
    );
    assert_eq!(settings.upstream.retry.max_attempts, 4);
    assert_eq!(settings.upstream.retry.ceiling, Duration::from_secs(30));
    assert_eq!(settings.upstream.breaker.failure_threshold, 5);
    assert_eq!(settings.tenants[0].client_secret.expose_secret(), "s3cret");
    assert!(settings.tls.is_none());
    assert_eq!(settings.changes.channel_check_interval, Duration::from_secs(6 * 3600));
    assert_eq!(settings.erasure.confirm_within, Duration::from_secs(10));
    assert_eq!(settings.erasure.retry_interval, Duration::from_secs(60));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (config(r#"data_center = "eu""#, ""), "tenants[0].data_center"),
        (config(r#"api_base_url = "not a url""#, ""), "tenants[0].api_base_url"),
        (config("", r#"state_ttl = "0s""#), "state_ttl"),
        (config("", "[log]\nformat = \"xml\""), "log.format"),
        (config("", "[tls]\ncert_file = \"/x.pem\""), "tls.key_file"),
        (config("", "unknown_key = 1"), "unknown_key"),
        (config("", r#"listen = "nowhere""#), "listen"),
        (config("rate_limit = { per_second = 0 }", ""), "tenants[0].rate_limit"),
        (config("", "[upstream]\nmax_attempts = 0"), "upstream.max_attempts"),
        (
            config("", "[upstream]\nbackoff_base = \"10s\"\nbackoff_max = \"1s\""),
            "upstream.backoff_base",
        ),
        (
            config("", "[upstream.breaker]\nfailure_threshold = 0"),
            "upstream.breaker.failure_threshold",
        ),
        (
            config("", "[changes]\nchannel_check_interval = \"30s\""),
            "changes.channel_check_interval",
        ),
        (
            config("", "[erasure]\nconfirm_within = \"2m\""),
            "erasure.confirm_within",
        ),
        (
            config("", "[erasure]\nretry_interval = \"500ms\""),
            "erasure.retry_interval",
        ),
    ];
    for (text, key) in cases {
        let error = error_of(&text);
        assert!(error.contains(key), "`{error}` should name `{key}`");
    }
}

#[test]
fn upstream_hosts_are_https_unless_loopback_or_allowed_outright() {
    let plain = config(r#"api_base_url = "http://cronofy.internal.example""#, "");
    let error = error_of(&plain);
    assert!(
        error.contains("tenants[0].api_base_url") && error.contains("https"),
        "{error}"
    );
    let plain_app = config(r#"app_base_url = "http://10.0.0.7:8080""#, "");
    assert!(error_of(&plain_app).contains("tenants[0].app_base_url"));
    for loopback in ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000"] {
        let text = config(&format!(r#"api_base_url = "{loopback}""#), "");
        assert!(settings_of(&text).is_ok(), "{loopback} is loopback");
    }
    let allowed = config(
        "api_base_url = \"http://cronofy.internal.example\"\nallow_plain_http = true",
        "",
    );
    let settings = settings_of(&allowed).expect("allowed outright");
    assert!(settings.tenants[0].allow_plain_http);
}

#[test]
fn secrets_must_exist_and_keys_must_be_32_bytes() {
    let missing = config("", "").replace("ACME_SECRET", "NOT_SET");
    assert!(error_of(&missing).contains("tenants[0].client_secret_env"));
    let short = config("", "").replace("key_env = \"K1\"", "key_env = \"SHORT\"");
    assert!(error_of(&short).contains("encryption.keys[0].key"));
    let both = config("client_secret_file = \"/tmp/x\"", "");
    assert!(error_of(&both).contains("client_secret_env"));
    let no_state = config("", "").replace("signing_key_env = \"STATE_KEY\"", "");
    assert!(error_of(&no_state).contains("state.signing_key_env"));
}

#[test]
fn a_key_may_decide_only_one_tenant() {
    let duplicated = format!(
        "{}\n[[tenants]]\nid = \"globex\"\napi_key_sha256 = [\"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"]\nclient_id = \"g\"\nclient_secret_env = \"ACME_SECRET\"\nredirect_uris = [\"https://g.example/cb\"]\n",
        config("", "")
    );
    assert!(error_of(&duplicated).contains("tenants[1].api_key_sha256[0]"));
    let bad_digest = config("", "").replace("2bb80d537b", "zz");
    assert!(error_of(&bad_digest).contains("tenants[0].api_key_sha256[0]"));
}

#[test]
fn store_urls_are_sqlite_or_postgres_and_redirects_must_be_absolute() {
    let postgres = config("", "").replace("sqlite::memory:", "postgres://localhost/calgate");
    assert!(Settings::from_toml_str(&postgres, &secrets()).is_ok());
    let mysql = config("", "").replace("sqlite::memory:", "mysql://localhost/calgate");
    assert!(error_of(&mysql).contains("store.url"));
    let relative = config("", "").replace("https://acme.example/cb", "/cb");
    assert!(error_of(&relative).contains("tenants[0].redirect_uris[0]"));
}

#[test]
fn environment_overrides_only_config_keys() {
    for key in [
        "LISTEN",
        "STORE__URL",
        "store__max_connections",
        "UPSTREAM__BREAKER__COOL_DOWN",
        "STATE_TTL",
    ] {
        assert!(is_config_env_key(key), "{key}");
    }
    // Secrets and the config path share the prefix but are not config keys.
    for key in ["CONFIG", "STATE_KEY", "KEY_K1", "TENANT_ACME_SECRET", "DB_PASSWORD"] {
        assert!(!is_config_env_key(key), "{key}");
    }
}

#[test]
fn secrets_never_print() {
    let settings = Settings::from_toml_str(&config("", ""), &secrets()).expect("valid");
    let printed = format!("{settings:?}");
    assert!(!printed.contains("s3cret"));
    assert!(!printed.contains(KEY));
}

#[test]
fn postgres_urls_never_fall_back_to_plaintext_silently() {
    for refused in [
        "postgres://calgate@db.internal/calgate",
        "postgres://calgate@db.internal/calgate?sslmode=prefer",
        "postgres://calgate@10.0.0.5/calgate?sslmode=allow",
        "postgres://calgate@db.internal/calgate?sslmode=sometimes",
        // Read as sqlx reads them: `host=` overrides the authority, the last
        // `sslmode` wins, `ssl-mode` is the same option.
        "postgres://calgate@localhost/calgate?host=db.prod.example.com",
        "postgres://calgate@db.internal/calgate?sslmode=verify-full&sslmode=prefer",
        "postgres://calgate@db.internal/calgate?ssl-mode=prefer",
        "postgres://calgate@localhost/calgate?hostaddr=10.0.0.5",
    ] {
        let error = super::check_store_url(refused).expect_err(refused).to_string();
        assert!(error.contains("store.url") && error.contains("sslmode"), "{error}");
    }
    for accepted in [
        "postgres://calgate@db.internal/calgate?sslmode=verify-full",
        "postgres://calgate@db.internal/calgate?sslmode=require",
        "postgres://calgate@db.internal/calgate?sslmode=disable",
        "postgres://postgres@127.0.0.1:5432/postgres",
        "postgres://postgres@localhost/postgres?sslmode=prefer",
        "postgres://calgate@[::1]/calgate",
        "postgres:///calgate?host=/run/postgresql",
        "postgres://calgate@db.internal/calgate?ssl-mode=require",
        "postgres://calgate@db.internal/calgate?sslmode=prefer&sslmode=verify-full",
        "postgres://calgate@db.internal/calgate?host=127.0.0.1",
        "sqlite://calgate.db",
    ] {
        super::check_store_url(accepted).expect(accepted);
    }
}

/// A second tenant on acme's Cronofy application, with `extra` keys.
fn sharing_acmes_application(extra: &str) -> String {
    format!(
        "{}\n[[tenants]]\nid = \"acme-eu\"\napi_key_sha256 = [\"{}\"]\nclient_id = \"acme-client\"\nclient_secret_env = \"ACME_SECRET\"\nredirect_uris = [\"https://eu.acme.example/cb\"]\n{extra}\n",
        config("", ""),
        "ab".repeat(32)
    )
}

#[test]
fn tenants_of_one_application_agree_on_its_budget_and_secret() {
    let settings = Settings::from_toml_str(&sharing_acmes_application(""), &secrets()).expect("same defaults");
    assert_eq!(settings.tenants[0].rate_limit, settings.tenants[1].rate_limit);
    let error = error_of(&sharing_acmes_application(
        "rate_limit = { per_second = 5, per_minute = 500 }",
    ));
    assert!(
        error.contains("tenants[1].rate_limit") && error.contains("acme-eu"),
        "{error}"
    );
    let mut other_secret = secrets();
    if let SecretSource::Map(map) = &mut other_secret {
        map.insert("OTHER".into(), "another".into());
    }
    let text = sharing_acmes_application("").replacen(
        "client_secret_env = \"ACME_SECRET\"\nredirect_uris = [\"https://eu",
        "client_secret_env = \"OTHER\"\nredirect_uris = [\"https://eu",
        1,
    );
    let error = Settings::from_toml_str(&text, &other_secret)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("tenants[1].client_secret"), "{error}");
    // Another data centre is another application: its own budget.
    let elsewhere =
        sharing_acmes_application("data_center = \"de\"\nrate_limit = { per_second = 5, per_minute = 500 }");
    assert!(Settings::from_toml_str(&elsewhere, &secrets()).is_ok());
}

#[test]
fn tenants_configured_with_one_application_are_listed_together() {
    let second = |id: &str, client: &str, dc: &str, digest: &str| {
        format!(
            "[[tenants]]\nid = \"{id}\"\napi_key_sha256 = [\"{}\"]\nclient_id = \"{client}\"\n\
             client_secret_env = \"ACME_SECRET\"\ndata_center = \"{dc}\"\nredirect_uris = [\"https://{id}.example/cb\"]\n",
            digest.repeat(32)
        )
    };
    let text = format!(
        "{}{}{}",
        config("", ""),
        second("globex", "acme-client", "us", "ab"),
        second("initech", "acme-client", "uk", "cd")
    );
    let settings = Settings::from_toml_str(&text, &secrets()).expect("valid");
    assert_eq!(
        settings.shared_applications(),
        [(
            "acme-client@us".to_owned(),
            vec!["acme".to_owned(), "globex".to_owned()]
        )],
        "another data centre is another application"
    );
}

#[test]
fn parked_pairs_have_a_spill_directory_by_default() {
    use std::path::PathBuf;
    let spill = |url: &str| super::default_spill_dir(url);
    assert_eq!(
        spill("sqlite:///data/calgate.db"),
        Some(PathBuf::from("/data/calgate-spill"))
    );
    assert_eq!(
        spill("sqlite://calgate.db?mode=rwc"),
        Some(PathBuf::from("calgate-spill"))
    );
    assert_eq!(spill("sqlite::memory:"), None, "nothing survives a restart anyway");
    assert_eq!(
        spill("postgres://calgate@db/calgate?sslmode=verify-full"),
        Some(PathBuf::from(super::DEFAULT_SPILL_DIR))
    );
    let set = config("", "").replace("[store]\n", "[store]\nspill_dir = \"/srv/spill\"\n");
    let settings = settings_of(&set).expect("config");
    assert_eq!(
        settings.store.spill_dir,
        Some(PathBuf::from("/srv/spill")),
        "a set one wins"
    );
}
