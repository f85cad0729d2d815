//! BuildAuthorizeUrl: the consent URL, its parameters and its validation.

use std::collections::HashMap;

use calgate::grpc::pb;
use tonic::Code;

use crate::support::*;

fn query(url: &str) -> (url::Url, HashMap<String, String>) {
    let parsed = url::Url::parse(url).expect("url");
    let query = parsed.query_pairs().into_owned().collect();
    (parsed, query)
}

#[tokio::test]
async fn individual_url_has_exactly_the_required_parameters() {
    let app = spawn_app().await;
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let built = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            ..Default::default()
        }))
        .await
        .expect("url")
        .into_inner();
    let (url, params) = query(&built.url);
    assert!(
        built
            .url
            .starts_with(&format!("{}oauth/authorize?", app.fake.app_base_url())),
        "{}",
        built.url
    );
    assert_eq!(url.path(), "/oauth/authorize");
    let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "avoid_linking",
            "client_id",
            "redirect_uri",
            "response_type",
            "scope",
            "state"
        ]
    );
    assert_eq!(
        params["avoid_linking"], "true",
        "the tenant's default: accounts are not linked"
    );
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["client_id"], "acme-client");
    assert_eq!(params["redirect_uri"], ACME_REDIRECT);
    assert_eq!(params["scope"], "free_busy_write");
    assert_eq!(params["state"], built.state);
    let expires = built.state_expires_at.expect("expiry").seconds;
    assert!(
        (before + 900..=before + 902).contains(&expires),
        "state_ttl defaults to 15 minutes"
    );
    assert!(app.fake.requests().is_empty(), "building a URL calls nobody");
}

#[tokio::test]
async fn optional_parameters_appear_only_when_set_and_are_encoded() {
    let app = spawn_app().await;
    let built = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            scope: vec!["read_events".into(), "create_event".into()],
            user_ref: Some("user 42&x=y".into()),
            provider_name: Some("office365".into()),
            link_token: Some("lt+/=&?".into()),
            locale: Some("de".into()),
            ..Default::default()
        }))
        .await
        .expect("url")
        .into_inner();
    let (_, params) = query(&built.url);
    assert_eq!(params["scope"], "read_events create_event");
    assert_eq!(params["provider_name"], "office365");
    assert!(
        !params.contains_key("avoid_linking"),
        "an explicit link is not sent with avoid_linking: {params:?}"
    );
    assert_eq!(params["link_token"], "lt+/=&?");
    assert_eq!(params["locale"], "de");
    assert!(
        !params.contains_key("user_ref"),
        "user_ref stays inside the sealed state"
    );
    assert!(
        !built.url.contains("user 42"),
        "nothing of user_ref is readable in the URL"
    );
    assert!(built.url.contains("link_token=lt%2B%2F%3D%26%3F"), "{}", built.url);
}

/// `link_token` asks Cronofy to link the authorization to an existing account
/// (docs: api-alpha/explicit-linking); `avoid_linking` asks it not to link.
/// With a link_token calgate leaves the tenant's default `avoid_linking` out,
/// and a request asking for both is refused, naming `allow_linking`.
#[tokio::test]
async fn a_link_token_is_never_sent_with_avoid_linking() {
    let app = spawn_app().await;
    let build = |allow_linking: Option<bool>, link_token: Option<&str>| {
        let mut client = app.client.clone();
        let request = app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            allow_linking,
            link_token: link_token.map(str::to_owned),
            ..Default::default()
        });
        async move { client.build_authorize_url(request).await }
    };
    let (_, by_default) = query(&build(None, None).await.expect("url").into_inner().url);
    assert_eq!(
        by_default["avoid_linking"], "true",
        "the tenant avoids linking by default"
    );

    let (_, linked) = query(&build(None, Some("lt_1")).await.expect("url").into_inner().url);
    assert_eq!(linked["link_token"], "lt_1");
    assert!(!linked.contains_key("avoid_linking"), "{linked:?}");

    let status = build(Some(false), Some("lt_1")).await.expect_err("contradiction");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    assert_eq!(violated_fields(&status), ["allow_linking"]);
}

#[tokio::test]
async fn enterprise_url_uses_the_enterprise_path_and_scopes() {
    let app = spawn_app().await;
    let built = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            connect_mode: pb::ConnectMode::Enterprise as i32,
            user_ref: Some("org-42".into()),
            ..Default::default()
        }))
        .await
        .expect("url")
        .into_inner();
    let (url, params) = query(&built.url);
    assert_eq!(url.path(), "/enterprise_connect/oauth/authorize");
    assert_eq!(params["scope"], "service_account/accounts/manage");
    assert_eq!(params["delegated_scope"], "free_busy_write");
}

#[tokio::test]
async fn a_redirect_uri_not_configured_for_the_tenant_is_refused() {
    let app = spawn_app().await;
    for redirect_uri in [GLOBEX_REDIRECT, "https://acme.example/cronofy/callback/", ""] {
        let status = app
            .client
            .clone()
            .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
                redirect_uri: redirect_uri.into(),
                ..Default::default()
            }))
            .await
            .expect_err("refused");
        assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
        assert_eq!(violated_fields(&status), ["redirect_uri"], "{redirect_uri}");
    }
}

#[tokio::test]
async fn every_bad_field_is_named_at_once() {
    let app = spawn_app().await;
    let status = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            scope: vec!["free_busy_write".into(), "two words".into()],
            connect_mode: 99,
            user_ref: Some("x".repeat(257)),
            provider_name: Some("Google!".into()),
            locale: Some("english".into()),
            ..Default::default()
        }))
        .await
        .expect_err("refused");
    assert_status(&status, Code::InvalidArgument, "FIELD_INVALID");
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        ["connect_mode", "locale", "provider_name", "scope[1]", "user_ref"]
    );
}

#[tokio::test]
async fn delegated_scope_needs_enterprise_mode() {
    let app = spawn_app().await;
    let status = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            delegated_scope: vec!["free_busy_write".into()],
            ..Default::default()
        }))
        .await
        .expect_err("refused");
    assert_eq!(violated_fields(&status), ["delegated_scope"]);
}

async fn avoid_linking_sent(app: &TestApp, request: pb::BuildAuthorizeUrlRequest) -> Option<String> {
    let built = app
        .client
        .clone()
        .build_authorize_url(app.req(pb::BuildAuthorizeUrlRequest {
            redirect_uri: ACME_REDIRECT.into(),
            ..request
        }))
        .await
        .expect("url")
        .into_inner();
    query(&built.url).1.remove("avoid_linking")
}

/// Cronofy links accounts authorized from one browser unless told not to, so
/// two users could share a sub (and a revoke): calgate asks it not to, per
/// tenant by default, and a request may choose explicitly.
#[tokio::test]
async fn accounts_are_not_linked_unless_the_tenant_or_request_allows_it() {
    let app = spawn_app().await;
    let default = pb::BuildAuthorizeUrlRequest::default;
    assert_eq!(avoid_linking_sent(&app, default()).await.as_deref(), Some("true"));
    let allow = pb::BuildAuthorizeUrlRequest {
        allow_linking: Some(true),
        ..default()
    };
    assert_eq!(
        avoid_linking_sent(&app, allow.clone()).await,
        None,
        "Cronofy's own default"
    );
    #[allow(deprecated)]
    let legacy = pb::BuildAuthorizeUrlRequest {
        avoid_linking: true,
        ..default()
    };
    assert_eq!(avoid_linking_sent(&app, legacy).await.as_deref(), Some("true"));

    let linking_tenant = spawn_app_edited(|s| s.tenants[0].avoid_linking = false).await;
    assert_eq!(avoid_linking_sent(&linking_tenant, default()).await, None);
    let avoid = pb::BuildAuthorizeUrlRequest {
        allow_linking: Some(false),
        ..default()
    };
    assert_eq!(
        avoid_linking_sent(&linking_tenant, avoid).await.as_deref(),
        Some("true")
    );
}
