use serde_json::{Value, json};

use super::*;

/// reqwest is built without a default TLS provider: calgate installs ring.
fn http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

async fn token(fake: &FakeCronofy, body: Value) -> (u16, Value) {
    let response = http()
        .build()
        .expect("client")
        .post(format!("{}oauth/token", fake.api_base_url()))
        .json(&body)
        .send()
        .await
        .expect("token endpoint");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn code(fake: &FakeCronofy) -> String {
    let response = consent(fake, "https://x.example/cb").await;
    assert_eq!(response.status().as_u16(), 302);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap_or_default()).expect("location");
    location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code")
}

#[tokio::test]
async fn rotation_refuses_a_reused_refresh_token_and_codes_are_single_use() {
    let fake = FakeCronofy::start().await.expect("fake");
    fake.register_client("c", "s");
    fake.set_refresh_tokens(RefreshTokens::Rotate);
    let code = code(&fake).await;
    let exchange = json!({"client_id": "c", "client_secret": "s", "grant_type": "authorization_code",
        "code": code, "redirect_uri": "https://x.example/cb"});
    let (status, first) = token(&fake, exchange.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        token(&fake, exchange).await,
        (400, json!({"error": "invalid_grant"})),
        "a used code"
    );

    let refresh = |token: &Value| {
        json!({"client_id": "c", "client_secret": "s", "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"]})
    };
    let (status, second) = token(&fake, refresh(&first)).await;
    assert_eq!(status, 200);
    assert_ne!(second["refresh_token"], first["refresh_token"], "rotated");
    assert_eq!(
        token(&fake, refresh(&first)).await,
        (400, json!({"error": "invalid_grant"})),
        "reuse refused"
    );
    let (status, _) = token(&fake, refresh(&second)).await;
    assert_eq!(status, 200, "the newest one works");
}

/// The consent page's answer for client `c` and `redirect_uri`, not followed.
async fn consent(fake: &FakeCronofy, redirect_uri: &str) -> reqwest::Response {
    let mut url = url::Url::parse(&format!("{}oauth/authorize", fake.app_base_url())).expect("url");
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "c")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "free_busy_write");
    http()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("authorize")
}

async fn consent_status(fake: &FakeCronofy, redirect_uri: &str) -> u16 {
    consent(fake, redirect_uri).await.status().as_u16()
}

/// In production mode Cronofy redirects codes only to registered URIs
/// (docs: /developers/faqs/verify-application), wildcards for subdomains.
#[tokio::test]
async fn consent_redirects_only_to_registered_uris() {
    let fake = FakeCronofy::start().await.expect("fake");
    fake.register_client("c", "s");
    assert_eq!(
        consent_status(&fake, "https://anything.example/cb").await,
        302,
        "development mode"
    );
    fake.register_redirect_uris("c", &["https://x.example/cb", "https://*.tenant.example/cb"]);
    assert_eq!(consent_status(&fake, "https://x.example/cb").await, 302);
    assert_eq!(consent_status(&fake, "https://eu.tenant.example/cb").await, 302);
    for refused in [
        "https://x.example/cb2",
        "https://x.example/cb?next=evil",
        "http://x.example/cb",
        "https://tenant.example/cb",
        "https://evil.example/cb",
        "https://eu.tenant.example.evil/cb",
    ] {
        assert_eq!(consent_status(&fake, refused).await, 400, "{refused}");
    }
}

#[tokio::test]
async fn token_requests_need_the_client_secret() {
    let fake = FakeCronofy::start().await.expect("fake");
    fake.register_client("c", "s");
    let body = json!({"client_id": "c", "client_secret": "wrong", "grant_type": "authorization_code",
        "code": "x", "redirect_uri": "https://x.example/cb"});
    assert_eq!(token(&fake, body).await, (400, json!({"error": "invalid_client"})));
}

/// An application asks about, and revokes, only its own users.
#[tokio::test]
async fn an_application_reaches_only_its_own_users() {
    let fake = FakeCronofy::start().await.expect("fake");
    fake.register_client("a", "secret-a");
    fake.register_client("b", "secret-b");
    let ada = fake.connect_account("a", "free_busy_write");
    let bob = fake.connect_account("b", "free_busy_write");
    let availability = |secret: &'static str, sub: String| {
        let url = format!("{}v1/availability", fake.api_base_url());
        async move {
            http()
                .build()
                .expect("client")
                .post(url)
                .bearer_auth(secret)
                .json(&json!({
                    "participants": [{"members": [{"sub": sub}], "required": "all"}],
                    "required_duration": {"minutes": 30},
                    "query_periods": [{"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T17:00:00Z"}],
                }))
                .send()
                .await
                .expect("availability")
                .status()
                .as_u16()
        }
    };
    assert_eq!(availability("secret-a", ada.sub.clone()).await, 200);
    assert_eq!(
        availability("secret-a", bob.sub.clone()).await,
        422,
        "another application's user"
    );
    assert_eq!(availability("nobody's", ada.sub.clone()).await, 401);

    let revoke = |client: &'static str, secret: &'static str, sub: String| {
        let url = format!("{}oauth/token/revoke", fake.api_base_url());
        async move {
            http()
                .build()
                .expect("client")
                .post(url)
                .json(&json!({"client_id": client, "client_secret": secret, "sub": sub}))
                .send()
                .await
                .expect("revoke")
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke("a", "secret-a", bob.sub.clone()).await, 400, "not a's to revoke");
    assert!(fake.revoked_subs("a").is_empty());
    assert_eq!(revoke("a", "secret-a", ada.sub.clone()).await, 200);
    assert_eq!(fake.revoked_subs("a"), vec![ada.sub]);
}

/// `last_modified` keeps only events the user changed ("last externally
/// modified, ie not by the application"); the list of channels holds the
/// account's channels until Cronofy closes them, silently or not.
#[tokio::test]
async fn change_reads_hold_only_the_users_changes_and_channels_are_listed() {
    let fake = FakeCronofy::start().await.expect("fake");
    fake.register_client("a", "secret-a");
    let ada = fake.connect_account("a", "free_busy_write");
    let client = http().build().expect("client");
    let api = fake.api_base_url();
    for id in ["mine", "theirs"] {
        let status = client
            .post(format!("{api}v1/calendars/{}/events", ada.calendar_id))
            .bearer_auth(&ada.access_token)
            .json(&json!({"event_id": id, "summary": id, "start": "2026-12-01T09:00:00Z",
                "end": "2026-12-01T10:00:00Z", "tzid": "Etc/UTC"}))
            .send()
            .await
            .expect("upsert")
            .status();
        assert_eq!(status.as_u16(), 202);
    }
    fake.user_deletes_event(&ada.sub, &ada.calendar_id, "theirs").await;
    let read = client
        .get(format!(
            "{api}v1/events?tzid=Etc/UTC&only_managed=true&include_deleted=true&last_modified=2020-01-01T00:00:00Z"
        ))
        .bearer_auth(&ada.access_token)
        .send()
        .await
        .expect("read")
        .json::<Value>()
        .await
        .expect("JSON");
    let ids: Vec<&str> = read["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["theirs"], "the application's own write is not an external change");

    let list = || async {
        client
            .get(format!("{api}v1/channels"))
            .bearer_auth(&ada.access_token)
            .send()
            .await
            .expect("list")
            .json::<Value>()
            .await
            .expect("JSON")["channels"]
            .as_array()
            .expect("channels")
            .len()
    };
    assert_eq!(list().await, 0);
    let created = client
        .post(format!("{api}v1/channels"))
        .bearer_auth(&ada.access_token)
        .json(&json!({"callback_url": "http://127.0.0.1:9/hook", "filters": {"only_managed": true}}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 200);
    assert_eq!(list().await, 1);
    assert_eq!(fake.close_channels_silently(&ada.sub), 1);
    assert_eq!(list().await, 0);
}

/// A bulk delete is accepted (202) and applied later; one still queued when
/// the authorization is revoked is dropped, and the events stay.
#[tokio::test]
async fn a_bulk_delete_is_applied_later_and_dropped_by_a_revoke() {
    let fake = FakeCronofy::start().await.expect("fake");
    fake.register_client("a", "secret-a");
    fake.apply_bulk_deletes_after(Duration::from_millis(200));
    let client = http().build().expect("client");
    let api = fake.api_base_url();
    let write_and_bulk_delete = |account: ConnectedAccount| {
        let (client, api) = (client.clone(), api.clone());
        async move {
            let status = client
                .post(format!("{api}v1/calendars/{}/events", account.calendar_id))
                .bearer_auth(&account.access_token)
                .json(
                    &json!({"event_id": "e", "summary": "e", "start": "2026-12-01T09:00:00Z",
                    "end": "2026-12-01T10:00:00Z", "tzid": "Etc/UTC"}),
                )
                .send()
                .await
                .expect("upsert")
                .status();
            assert_eq!(status.as_u16(), 202);
            let status = client
                .delete(format!("{api}v1/events"))
                .bearer_auth(&account.access_token)
                .json(&json!({"delete_all": true}))
                .send()
                .await
                .expect("bulk delete")
                .status();
            assert_eq!(status.as_u16(), 202);
            account
        }
    };
    let ada = write_and_bulk_delete(fake.connect_account("a", "free_busy_write")).await;
    assert_eq!(fake.event_count(&ada.sub), 1, "not applied yet");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.event_count(&ada.sub), 0, "applied");
    assert_eq!(fake.queued_deletes(), 0);

    let bob = write_and_bulk_delete(fake.connect_account("a", "free_busy_write")).await;
    let revoked = client
        .post(format!("{api}oauth/token/revoke"))
        .json(&json!({"client_id": "a", "client_secret": "secret-a", "sub": bob.sub}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(fake.queued_deletes(), 0, "dropped with the authorization");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.event_count(&bob.sub), 1, "the events stay");
}
