//! The real binary with mutual TLS: certificates made here, a client without
//! one refused, grpcurl with one accepted, health on the plaintext port, roles.

use std::{path::Path, process::Command};

use payment_orchestrator::api::proto::{
    self, admin_service_client::AdminServiceClient, payment_service_client::PaymentServiceClient,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use super::support::{deployment::Process, harness::*, redis_server::free_port, waits::connected};

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(vec!["localhost".into(), "127.0.0.1".into()]),
        client: leaf(vec!["checkout.internal".into()]),
    }
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

async fn tls_channel(
    port: u16,
    pki: &Pki,
    with_identity: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    if with_identity {
        tls = tls.identity(Identity::from_pem(&pki.client.0, &pki.client.1));
    }
    Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate_and_serves_those_with_one() {
    let pki = pki();
    let dir = tempfile_dir();
    let (port, health_port) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_payment-orchestrator"));
    command
        .env("PAYMENT_ORCHESTRATOR_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "PAYMENT_ORCHESTRATOR_HEALTH_LISTEN",
            format!("127.0.0.1:{health_port}"),
        )
        .env("PAYMENT_ORCHESTRATOR_METRICS_LISTEN", "off")
        .env(
            "PAYMENT_ORCHESTRATOR_TLS_CERT",
            write(&dir, "server.pem", &pki.server.0),
        )
        .env(
            "PAYMENT_ORCHESTRATOR_TLS_KEY",
            write(&dir, "server.key", &pki.server.1),
        )
        .env(
            "PAYMENT_ORCHESTRATOR_TLS_CLIENT_CA",
            write(&dir, "ca.pem", &pki.ca),
        )
        .env("RUST_LOG", "warn");
    let _server = Process::spawn(&mut command);

    // Health answers on the plaintext port (Kubernetes probes).
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let health_channel = connected(&format!("http://127.0.0.1:{health_port}")).await;
    let health = HealthClient::new(health_channel)
        .check(HealthCheckRequest {
            service: "payment_orchestrator.v1.PaymentService".into(),
        })
        .await
        .answer();
    assert_eq!(health.status(), ServingStatus::Serving);

    // Without a client certificate: refused. With TLS 1.3 the client may
    // learn it only on its first call, as a transport error of some code;
    // what must never happen is an answer from the service (here NOT_FOUND).
    if let Ok(channel) = tls_channel(port, &pki, false).await {
        let answer = PaymentServiceClient::with_interceptor(channel, Bearer::new(DEMO_KEY))
            .get_payment(proto::GetPaymentRequest {
                payment_id: new_key(),
            })
            .await;
        match answer {
            Err(status) if status.code() != Code::NotFound => {}
            served => panic!("a client without a certificate was served: {served:?}"),
        }
    }

    // With one: served, and the roles hold.
    let channel = tls_channel(port, &pki, true).await.unwrap();
    let unknown = PaymentServiceClient::with_interceptor(channel.clone(), Bearer::new(DEMO_KEY))
        .get_payment(proto::GetPaymentRequest {
            payment_id: new_key(),
        })
        .await
        .refusal();
    assert_eq!(unknown.code(), Code::NotFound);
    let wrong_key =
        PaymentServiceClient::with_interceptor(channel.clone(), Bearer::new("sk_wrong"))
            .get_payment(proto::GetPaymentRequest {
                payment_id: new_key(),
            })
            .await
            .refusal();
    assert_eq!(wrong_key.code(), Code::Unauthenticated);
    let merchant_on_admin = AdminServiceClient::with_interceptor(channel, Bearer::new(DEMO_KEY))
        .sync_operation(proto::SyncOperationRequest {
            operation_id: new_key(),
        })
        .await
        .refusal();
    assert_eq!(merchant_on_admin.code(), Code::PermissionDenied);

    // grpcurl with the client certificate succeeds; without it, it fails.
    let ca = write(&dir, "ca.pem", &pki.ca);
    let (cert, key) = (
        write(&dir, "client.pem", &pki.client.0),
        write(&dir, "client.key", &pki.client.1),
    );
    let target = format!("127.0.0.1:{port}");
    let with_cert = Command::new("grpcurl")
        .args([
            "-cacert",
            &ca,
            "-cert",
            &cert,
            "-key",
            &key,
            "-servername",
            "localhost",
            &target,
            "list",
        ])
        .output()
        .expect("grpcurl is installed");
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    assert!(
        String::from_utf8_lossy(&with_cert.stdout)
            .contains("payment_orchestrator.v1.PaymentService")
    );
    let without_cert = Command::new("grpcurl")
        .args(["-cacert", &ca, "-servername", "localhost", &target, "list"])
        .output()
        .unwrap();
    assert!(!without_cert.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("po-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `PartnerGatewayService` served over TLS with a certificate of a private
/// CA: reached through `https://` when the partner's `ca_file` names the CA;
/// without it the handshake fails and nothing is authorized (the call's
/// outcome is left to the resolver, as for any failed gateway call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_gateway_over_https_is_trusted_through_the_configured_ca() {
    use tonic::transport::{Server, ServerTlsConfig, server::TcpIncoming};

    let pki = pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = sandbox_partner::Gateway::new();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&pki.server.0, &pki.server.1));
    let serving = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(gateway.gateway_service())
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(serving);

    let dir = std::env::temp_dir().join(format!("po-gateway-tls-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = write(&dir, "ca.pem", &pki.ca);
    let flags = config_file(&format!(
        r#"
[partners.secure]
kind = "grpc"
methods = ["creditcard"]
url = "https://localhost:{port}"
ca_file = "{ca}"
timeout = "2s"

[partners.untrusted]
kind = "grpc"
methods = ["creditcard"]
url = "https://localhost:{port}"
timeout = "2s"
"#
    ));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&flags).await;

    let payment = authorized(&server, vec![leg("secure", "creditcard", 5000, "tok")]).await;
    let capture = server
        .payments()
        .capture(capture(&payment, None))
        .await
        .answer()
        .operation
        .unwrap();
    assert_eq!(capture.status(), proto::OperationStatus::Success);

    let session = open_session(&server, 5000, proto::CaptureMode::Manual).await;
    let refused = submit(
        &server,
        &session.id,
        vec![leg("untrusted", "creditcard", 5000, "tok")],
    )
    .await
    .unwrap();
    let legs = &refused.authorization.as_ref().unwrap().partner_transactions;
    assert_ne!(
        legs[0].status(),
        proto::OperationStatus::Success,
        "{refused:#?}"
    );
    assert_ne!(refused.state(), proto::PaymentState::Authorized);
}
