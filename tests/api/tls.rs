//! TLS and mutual TLS on the gRPC listener (`[tls]`).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

/// A CA, a server certificate for `localhost` and a client certificate, all as PEM.
struct Pki {
    ca: String,
    client_cert: String,
    client_key: String,
}

fn write_pki(work: &Workdir) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert").pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let client = CertificateParams::new(vec!["billing-service".to_owned()])
        .expect("client params")
        .signed_by(&client_key, &issuer)
        .expect("client cert");
    std::fs::write(work.path("server.pem"), server.pem()).expect("write");
    std::fs::write(work.path("server.key"), server_key.serialize_pem()).expect("write");
    std::fs::write(work.path("ca.pem"), &ca).expect("write");
    Pki {
        ca,
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn tls_table(work: &Workdir, mutual: bool) -> String {
    let p = |name: &str| work.path(name).display().to_string();
    let mut table = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        p("server.pem"),
        p("server.key")
    );
    if mutual {
        table.push_str(&format!("client_ca_file = \"{}\"\n", p("ca.pem")));
    }
    table
}

async fn health_over(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    health(&channel, "").await
}

async fn tls_channel(app: &TestApp, pki: &Pki, with_identity: bool) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn tls_serves_only_tls_clients() {
    let work = Workdir::new();
    let pki = write_pki(&work);
    let extra = tls_table(&work, false);
    let keys = work.key("k1");
    let app = spawn_app_with(start_fake().await, work, &keys, &extra).await;

    let channel = tls_channel(&app, &pki, false).await.expect("TLS handshake");
    assert_eq!(
        health_over(channel).await.expect("health over TLS"),
        ServingStatus::Serving
    );
    // A plaintext HTTP/2 client never gets a gRPC answer from the TLS port: the
    // connection fails in the transport, not with a status calgate chose.
    let plaintext = health_over(app.channel.clone())
        .await
        .expect_err("plaintext is refused");
    assert_eq!(
        (plaintext.code(), plaintext.message()),
        (tonic::Code::Unknown, "transport error"),
        "{plaintext:?}"
    );
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let work = Workdir::new();
    let pki = write_pki(&work);
    let extra = tls_table(&work, true);
    let keys = work.key("k1");
    let app = spawn_app_with(start_fake().await, work, &keys, &extra).await;

    let channel = tls_channel(&app, &pki, true).await.expect("mTLS handshake");
    assert_eq!(
        health_over(channel).await.expect("health over mTLS"),
        ServingStatus::Serving
    );
    // The server demands a certificate: TLS 1.3 clients learn it at their first call.
    // The Debug forms carry the whole cause chain, down to the TLS alert.
    let refusal = match tls_channel(&app, &pki, false).await {
        Ok(channel) => format!(
            "{:?}",
            health_over(channel)
                .await
                .expect_err("a client without a certificate is refused")
        ),
        Err(error) => format!("{error:?}"),
    };
    assert!(
        refusal.contains("CertificateRequired"),
        "refused for its missing certificate: {refusal}"
    );
}
