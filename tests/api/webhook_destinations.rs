//! Webhook destinations as an attacker would try them: every hostile URL
//! and header set is refused at CreateSession (INVALID_ARGUMENT naming the
//! field, nothing stored), or — where only the connection can tell (a name
//! that resolves to loopback, a redirect) — the delivery fails and nothing
//! reaches the target.
//!
//! The server allows one private network, 127.0.0.2/32 (a stand-in for a
//! merchant's internal receiver); the target the attacks aim at listens on
//! 127.0.0.1, outside it.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use payment_orchestrator::api::proto;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::support::harness::*;

async fn on(address: &str) -> MockServer {
    let listener = std::net::TcpListener::bind(address).expect("binds");
    MockServer::builder().listener(listener).start().await
}

/// A destination, its merchant headers and the field its refusal names.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, String);

fn hook(url: &str, headers: &[(&str, &str)]) -> proto::CreateSessionRequest {
    let mut request = create_request(5000, proto::CaptureMode::Manual);
    request.webhook = Some(proto::Webhook {
        url: url.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
    });
    request
}

/// This machine's name, and whether it resolves to loopback only.
async fn own_name() -> (String, bool) {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_else(|_| "localhost".into())
        .trim()
        .to_owned();
    let loopback = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .map(|addrs| {
            let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            !ips.is_empty() && ips.iter().all(IpAddr::is_loopback)
        })
        .unwrap_or(false);
    (name, loopback)
}

#[tokio::test]
async fn hostile_webhook_destinations_are_refused_and_nothing_reaches_the_target() {
    let target = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&target)
        .await;
    let t = target.address().port();
    let internal = on("127.0.0.2:0").await;
    let r = internal.address().port();
    Mock::given(method("POST"))
        .and(path("/redirect"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("location", format!("http://127.0.0.1:{t}/hook").as_str()),
        )
        .mount(&internal)
        .await;
    Mock::given(method("POST"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&internal)
        .await;
    let server = TestServer::start_with(&["--webhook-allowed-networks", "127.0.0.2/32"]).await;
    let allowed = format!("http://127.0.0.2:{r}/ok");

    let refused_urls = [
        format!("http://localhost:{t}/hook"),
        format!("http://LocalHost.:{t}/hook"),
        format!("http://127.0.0.1:{t}/hook"),
        format!("http://0.0.0.0:{t}/hook"),
        format!("http://[::1]:{t}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{t}/hook"),
        "http://[::ffff:169.254.169.254]/".to_owned(),
        format!("http://2130706433:{t}/hook"),
        format!("http://0x7f000001:{t}/hook"),
        format!("http://0177.0.0.1:{t}/hook"),
        format!("http://127.1:{t}/hook"),
        "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        format!("http://user:secret@127.0.0.2:{r}/ok"),
        format!("gopher://127.0.0.2:{r}/ok"),
    ];
    let refused_headers = [
        ("Host", "metadata.internal"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
        ("Content-Length", "0"),
        ("webhook-signature", "v1,forged"),
        ("Proxy-Authorization", "Basic x"),
    ];
    let refused_at_creation: Vec<Case> = refused_urls
        .into_iter()
        .map(|url| (url, vec![], "webhook.url".to_owned()))
        .chain(refused_headers.into_iter().map(|header| {
            let field = format!("webhook.headers[\"{}\"]", header.0);
            (allowed.clone(), vec![header], field)
        }))
        .collect();
    assert!(refused_at_creation.len() >= 12);
    for (url, headers, field) in &refused_at_creation {
        let status = server
            .sessions()
            .create_session(hook(url, headers))
            .await
            .expect_err(&format!("{url} {headers:?} must be refused"));
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{url} {headers:?}"
        );
        let fields: Vec<String> = violations(&status).into_iter().map(|v| v.0).collect();
        assert_eq!(fields, vec![field.clone()], "{url} {headers:?}");
    }
    // Nothing was stored.
    let request = proto::ListSessionsRequest::default();
    let listed = server.sessions().list_sessions(request).await.answer();
    assert!(listed.sessions.is_empty(), "{listed:?}");

    // Only the connection can tell: a name that resolves to loopback, and a
    // redirect from the allowed receiver to the target.
    let (name, name_is_loopback) = own_name().await;
    let visible_at_delivery = [
        format!("http://{name}:{t}/hook"),
        format!("http://127.0.0.2:{r}/redirect"),
    ];
    for url in visible_at_delivery.iter().chain([&allowed]) {
        let session = server
            .sessions()
            .create_session(hook(url, &[("X-Merchant-Token", "t0k3n")]))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"))
            .into_inner();
        submit(&server, &session.id, vec![card(5000, "tok")])
            .await
            .unwrap();
    }
    let report = server.resolve_after(Duration::ZERO).await;
    assert_eq!(
        (report.delivered, report.retrying),
        (1, 2),
        "only the allowed receiver's delivery succeeds: {report:?}"
    );
    assert!(
        target.received_requests().await.unwrap().is_empty(),
        "nothing reached the target"
    );
    let internal_got: Vec<String> = internal
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(internal_got.len(), 2, "{internal_got:?}");
    assert!(internal_got.contains(&"/redirect".to_owned()));
    if !name_is_loopback {
        eprintln!("note: {name} does not resolve to loopback here; its case shows less");
    }
}

/// The embedded demo allows loopback (and says so at startup); a service
/// configured with other networks refuses it.
#[tokio::test]
async fn loopback_is_allowed_only_where_configured() {
    let demo = TestServer::start().await;
    demo.sessions()
        .create_session(hook("http://127.0.0.1:9/hook", &[]))
        .await
        .expect("the demo allows loopback");
    let strict = TestServer::start_with(&[
        "--webhook-allowed-networks",
        "10.0.0.0/8",
        "--webhook-allowed-schemes",
        "https",
    ])
    .await;
    let status = strict
        .sessions()
        .create_session(hook("http://127.0.0.1:9/hook", &[]))
        .await
        .refusal();
    let reasons = violations(&status);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].1.contains("scheme http"), "{reasons:?}");
    let status = strict
        .sessions()
        .create_session(hook("https://127.0.0.1:9/hook", &[]))
        .await
        .refusal();
    assert!(violations(&status)[0].1.contains("loopback"), "{status:?}");
}
