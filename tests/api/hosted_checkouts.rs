//! Partner-hosted checkouts: StartPartnerCheckout opens one at the partner,
//! the shopper completes it there, the partner calls the callback listener,
//! and the leg that names it authorizes by what a lookup at the partner
//! says. Walley and WePay run as real simulator processes; the sandbox's
//! page is served by the callback listener itself.

use std::time::Duration;

use payment_orchestrator::api::proto::{
    self, partner_event_service_client::PartnerEventServiceClient,
};
use serde_json::{Value, json};
use tonic::Code;

use super::support::{
    harness::*,
    redis_server::{RedisServer, redis_cli},
    simulator::{Partners, Simulator},
};

/// A leg of `amount` at `partner`/`method` paid through the hosted
/// checkout `id`.
fn hosted(partner: &str, method: &str, amount: i64, id: &str) -> proto::SplitLeg {
    proto::SplitLeg {
        partner_checkout_id: id.into(),
        ..leg(partner, method, amount, "")
    }
}

async fn start_checkout(
    server: &TestServer,
    session: &str,
    partner: &str,
) -> Result<proto::PartnerCheckout, tonic::Status> {
    server
        .sessions()
        .start_partner_checkout(proto::StartPartnerCheckoutRequest {
            session_id: session.into(),
            partner: partner.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A MANUAL EUR session of `amount`, its checkout at `partner`, and its
/// payment submitted on it before the shopper is done: the leg waits.
async fn waiting_on_checkout(
    server: &TestServer,
    partner: &str,
    method: &str,
    amount: i64,
) -> (proto::Session, proto::PartnerCheckout, proto::Payment) {
    let session = open_session_in(server, amount, "EUR").await;
    let checkout = start_checkout(server, &session.id, partner).await.unwrap();
    let payment = submit(
        server,
        &session.id,
        vec![hosted(partner, method, amount, &checkout.id)],
    )
    .await
    .unwrap();
    assert_eq!(
        authorization_status(&payment),
        proto::OperationStatus::Pending
    );
    (session, checkout, payment)
}

/// The shopper completes checkout `id` at the simulation (`body`: its
/// options); what the simulation answered.
async fn complete(simulator: &Simulator, id: &str, body: Value) -> Value {
    simulator
        .post(&format!("/_sim/checkouts/{id}/complete"), body)
        .await
}

/// The callback listener's URL for `path`.
fn callback_url(server: &TestServer, path: &str) -> String {
    let address = server.callbacks.expect("a callback listener");
    format!("http://{address}{path}")
}

async fn get_status(url: &str) -> u16 {
    reqwest::get(url).await.expect("answers").status().as_u16()
}

/// A WePay IPN (a form) naming `checkout` for `session`: the status.
async fn ipn(server: &TestServer, session: &str, checkout: &str) -> u16 {
    reqwest::Client::new()
        .post(callback_url(server, &format!("/callbacks/wepay/{session}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("checkout_id={checkout}"))
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

fn authorization_status(payment: &proto::Payment) -> proto::OperationStatus {
    payment
        .authorization
        .as_ref()
        .expect("an authorization")
        .status()
}

async fn assert_authorized(server: &TestServer, payment: &proto::Payment) -> proto::Payment {
    let payment = payment_now(server, &payment.id).await;
    assert_eq!(
        payment.state(),
        proto::PaymentState::Authorized,
        "{payment:#?}"
    );
    payment
}

/// A hosted checkout backs its own payment: a later payment naming it as
/// its parent is refused.
async fn assert_not_a_parent(server: &TestServer, payment: &proto::Payment, partner: &str) {
    let method = &payment.split[0].method;
    let later = open_session_in(server, 1000, "EUR").await;
    let refused = submit(
        server,
        &later.id,
        vec![proto::SplitLeg {
            parent_payment_id: payment.id.clone(),
            ..leg(partner, method, 1000, "")
        }],
    )
    .await
    .unwrap_err();
    assert_eq!(
        violations(&refused)[0].0,
        "split[0].parent_payment_id".to_owned()
    );
}

/// Walley's reads of checkout `id`.
async fn checkout_reads(partners: &Partners, id: &str) -> usize {
    partners.walley.requests(&format!("/checkouts/{id}")).await
}

#[tokio::test]
async fn a_walley_checkout_authorizes_its_leg_once_the_shopper_completes_it_and_walley_calls_back()
{
    let (partners, server) = Partners::serving().await;
    let (session, checkout, payment) =
        waiting_on_checkout(&server, "walley", "invoice", 5000).await;
    assert!(
        checkout.public_token.starts_with("public-FI-"),
        "{checkout:?}"
    );
    assert_eq!(checkout.amount, 5000);
    // Idempotent per session and partner: the same checkout again.
    let again = start_checkout(&server, &session.id, "walley")
        .await
        .unwrap();
    assert_eq!(again.id, checkout.id);
    assert_eq!(partners.walley.requests("/checkouts").await, 1);
    // GetSession lists it.
    let listed = server.sessions().session(&session.id).await;
    assert_eq!(listed.partner_checkouts, vec![checkout.clone()]);

    // Forged callbacks change nothing and ask Walley nothing.
    let reads = checkout_reads(&partners, &checkout.id).await;
    let (s, c) = (&session.id, &checkout.id);
    let other_session = uuid::Uuid::now_v7();
    for (path, status) in [
        (format!("/callbacks/walley/{s}?privateId=forged"), 404),
        (
            format!("/callbacks/walley/{other_session}?privateId={c}"),
            404,
        ),
        (format!("/callbacks/nobody/{s}?privateId={c}"), 404),
        (
            format!("/callbacks/walley/not-a-session?privateId={c}"),
            400,
        ),
        (format!("/callbacks/walley/{s}"), 400),
    ] {
        let answered = get_status(&callback_url(&server, &path)).await;
        assert_eq!(answered, status, "{path}");
    }
    assert_eq!(checkout_reads(&partners, c).await, reads);
    assert_eq!(
        authorization_status(&payment_now(&server, &payment.id).await),
        proto::OperationStatus::Pending
    );

    // The shopper completes it; the order is invisible at first (404), and
    // Walley calls back before the completion answers.
    let completed = complete(&partners.walley, c, json!({ "invisible_for_ms": 300 })).await;
    assert_eq!(completed["notified"], json!(200), "{completed}");
    let order = completed["orderId"].as_str().unwrap().to_owned();
    // Only a 404 has the order read again: it was read until visible.
    let order_reads = partners
        .walley
        .requests(&format!("/manage/orders/{order}"))
        .await;
    assert!(order_reads >= 2, "{order_reads} reads of the order");
    let payment = assert_authorized(&server, &payment).await;
    let tx = &payment.authorization.as_ref().unwrap().partner_transactions[0];
    assert_eq!(tx.partner_reference, order);

    // The same callback again: answered, and Walley is asked nothing more.
    let reads = checkout_reads(&partners, c).await;
    let path = format!("/callbacks/walley/{s}?privateId={c}");
    assert_eq!(get_status(&callback_url(&server, &path)).await, 200);
    assert_eq!(checkout_reads(&partners, c).await, reads);

    // The order is the checkout's: not a token another session may submit.
    let other = open_session_in(&server, 5000, "EUR").await;
    let refused = submit(
        &server,
        &other.id,
        vec![leg("walley", "invoice", 5000, &order)],
    )
    .await
    .unwrap();
    assert_eq!(refused.state(), proto::PaymentState::Failed, "{refused:#?}");
    let declined = &refused.authorization.as_ref().unwrap().partner_transactions[0];
    let why = &declined.partner_status_description;
    assert!(why.contains("hosted checkout"), "{declined:?}");

    // Walley captures asynchronously (202): done once the order shows it.
    let done = captured(&server, capture(&payment, Some(2000))).await;
    server.resolve_after(Duration::from_secs(5)).await;
    let capture_now = operation_now(&server, &done.operation.id).await;
    assert_eq!(legs_of(&capture_now), succeeded(&[("walley", 2000)]));
    assert_eq!(
        partners.walley.executed("capture").await,
        vec![(order, "20.00".to_owned())]
    );
}

/// The shopper completes the checkout but the partner never calls back:
/// the resolver's lookup authorizes the leg.
async fn completed_without_a_callback(partner: &str, method: &str) {
    let (partners, server) = Partners::serving().await;
    let (_, checkout, payment) = waiting_on_checkout(&server, partner, method, 3000).await;
    let simulator = match partner {
        "walley" => &partners.walley,
        _ => &partners.wepay,
    };
    let completed = complete(simulator, &checkout.id, json!({ "notify": false })).await;
    assert_eq!(completed["notified"], Value::Null);
    assert_eq!(
        authorization_status(&payment_now(&server, &payment.id).await),
        proto::OperationStatus::Pending
    );
    let report = server.resolve_after(Duration::from_secs(5)).await;
    assert_eq!(report.finalized, 1, "{report:?}");
    assert_authorized(&server, &payment).await;
}

/// A partner event about a hosted checkout's leg only has the partner
/// asked: the shopper has not paid, so the leg still waits, and the
/// event's reference (where captures would go) is not taken.
#[tokio::test]
async fn a_partner_event_about_a_hosted_checkout_is_checked_with_the_partner() {
    let (_partners, server) = Partners::serving().await;
    let (_, _, payment) = waiting_on_checkout(&server, "wepay", "creditcard", 3000).await;
    let authorization = payment.authorization.clone().unwrap();
    let elsewhere = "another-shoppers-checkout";
    let event = succeeded_event("wepay", "evt-hosted", &authorization.id, 0, elsewhere);
    let mut partner = PartnerEventServiceClient::with_interceptor(
        server.channel(),
        Bearer::new("sk_test_partner"),
    );
    partner.notify_partner_event(event).await.answer();
    let now = payment_now(&server, &payment.id).await;
    assert_eq!(authorization_status(&now), proto::OperationStatus::Pending);
    let tx = &now.authorization.unwrap().partner_transactions[0];
    assert_ne!(tx.partner_reference, elsewhere);
}

/// While another replica looks the authorization up (it may have asked
/// before the shopper paid), a callback or an event about it is refused so
/// that the partner calls again; the next call authorizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_while_another_replica_looks_is_refused_for_the_partner_to_call_again() {
    let redis = RedisServer::start();
    let partners = Partners::start().await;
    let on_redis = &["--redis-url", &redis.url()];
    let server = TestServer::start_configured(&partners.config, on_redis).await;
    let (session, checkout, payment) =
        waiting_on_checkout(&server, "wepay", "creditcard", 3000).await;
    let authorization = payment.authorization.clone().unwrap();
    let lease = format!("po:{{lease:resolve:{}}}", authorization.id);
    redis_cli(
        redis.port,
        &["SET", &lease, "another-replica", "PX", "60000"],
    )
    .unwrap();
    complete(&partners.wepay, &checkout.id, json!({ "notify": false })).await;

    assert_eq!(ipn(&server, &session.id, &checkout.id).await, 503);
    let mut partner = PartnerEventServiceClient::with_interceptor(
        server.channel(),
        Bearer::new("sk_test_partner"),
    );
    let event = succeeded_event("wepay", "evt-busy", &authorization.id, 0, "");
    let refused = partner.notify_partner_event(event).await.refusal();
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");

    redis_cli(redis.port, &["DEL", &lease]).unwrap();
    assert_eq!(ipn(&server, &session.id, &checkout.id).await, 200);
    assert_authorized(&server, &payment).await;
}

#[tokio::test]
async fn a_walley_checkout_whose_callback_never_comes_is_completed_by_the_resolver() {
    completed_without_a_callback("walley", "invoice").await;
}

#[tokio::test]
async fn a_wepay_checkout_whose_ipn_never_comes_is_completed_by_the_resolver() {
    completed_without_a_callback("wepay", "creditcard").await;
}

#[tokio::test]
async fn a_wepay_hosted_checkout_authorizes_its_leg_on_the_ipn_and_captures() {
    let (partners, server) = Partners::serving().await;
    let (session, checkout, payment) =
        waiting_on_checkout(&server, "wepay", "creditcard", 4200).await;
    assert!(
        checkout.redirect_url.contains(&checkout.id),
        "WePay's checkout_uri: {checkout:?}"
    );
    // A forged IPN for a checkout we never opened.
    assert_eq!(ipn(&server, &session.id, "999").await, 404);

    let completed = complete(&partners.wepay, &checkout.id, json!({})).await;
    assert_eq!(completed["notified"], json!(200), "{completed}");
    let payment = assert_authorized(&server, &payment).await;

    // The same IPN again: answered, and WePay is asked nothing more.
    let reads = partners.wepay.requests("/checkout").await;
    assert_eq!(ipn(&server, &session.id, &checkout.id).await, 200);
    assert_eq!(partners.wepay.requests("/checkout").await, reads);

    let done = captured(&server, capture(&payment, None)).await;
    assert_eq!(legs_of(&done.operation), succeeded(&[("wepay", 4200)]));
    let captures = partners.wepay.bodies("/checkout/capture").await;
    assert!(
        captures.iter().any(|body| body.contains(&checkout.id)),
        "the hosted checkout itself is captured"
    );
    assert_not_a_parent(&server, &payment, "wepay").await;
}

#[tokio::test]
async fn the_sandbox_serves_its_hosted_checkout_page_and_an_update_reopens_it_until_completed() {
    let server = TestServer::start().await;
    let session = open_session(&server, 2500, proto::CaptureMode::Manual).await;
    let first = start_checkout(&server, &session.id, "ingenico")
        .await
        .unwrap();
    let page: Value = reqwest::get(&first.redirect_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["amount"], json!(2500), "{page}");
    let update = |amount, mask: &[&str]| proto::UpdateSessionRequest {
        session_id: session.id.clone(),
        idempotency_key: new_key(),
        update_mask: Some(prost_types::FieldMask {
            paths: mask.iter().map(|p| (*p).to_owned()).collect(),
        }),
        amount,
        ..Default::default()
    };

    // A new amount: the partner's checkout is reopened for it.
    server
        .sessions()
        .update_session(update(3000, &["amount"]))
        .await
        .unwrap();
    let reopened = start_checkout(&server, &session.id, "ingenico")
        .await
        .unwrap();
    assert_ne!(reopened.id, first.id);
    assert_eq!(reopened.amount, 3000);
    // The stale checkout is no longer the session's.
    let stale = vec![hosted("ingenico", "creditcard", 3000, &first.id)];
    let refused = submit(&server, &session.id, stale).await.unwrap_err();
    assert_eq!(
        violations(&refused)[0].0,
        "split[0].partner_checkout_id".to_owned()
    );

    // The shopper completes it on the page; the sandbox calls back.
    let completed: Value = reqwest::Client::new()
        .post(format!("{}/complete", reopened.redirect_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(completed["callback_status"], json!(200), "{completed}");

    // Completed: the amount can no longer change.
    let request = update(3500, &["amount"]);
    let refused = server.sessions().update_session(request).await.refusal();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("CHECKOUT_COMPLETED"));

    let split = vec![hosted("ingenico", "creditcard", 3000, &reopened.id)];
    let payment = submit(&server, &session.id, split).await.unwrap();
    assert_eq!(
        payment.state(),
        proto::PaymentState::Authorized,
        "{payment:#?}"
    );
    let done = captured(&server, capture(&payment, None)).await;
    assert_eq!(legs_of(&done.operation), succeeded(&[("ingenico", 3000)]));
    // The sandbox answers a stored card for it all the same.
    assert_not_a_parent(&server, &payment, "ingenico").await;
}

#[tokio::test]
async fn another_merchants_session_or_a_partner_without_hosted_checkouts_is_refused() {
    let server = TestServer::start().await;
    let session = open_session(&server, 1000, proto::CaptureMode::Manual).await;
    let refused = server
        .sessions_as(Some(OTHER_KEY))
        .start_partner_checkout(proto::StartPartnerCheckoutRequest {
            session_id: session.id.clone(),
            partner: "ingenico".into(),
        })
        .await
        .refusal();
    assert_eq!(refused.code(), Code::NotFound);
    let refused = start_checkout(&server, &session.id, "nobody")
        .await
        .unwrap_err();
    assert_eq!(violations(&refused)[0].0, "partner".to_owned());
    // A submitted token in the hosted form is bad input.
    let forged = vec![card(1000, "hosted-checkout:ingenico-co-000001")];
    let refused = submit(&server, &session.id, forged).await.unwrap_err();
    assert_eq!(
        violations(&refused)[0].0,
        "split[0].payment_token".to_owned()
    );
}
