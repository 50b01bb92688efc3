//! UpdateSession: an OPEN session's amount, items, webhook and metadata
//! change before it is submitted, and the submit uses what it has then.

use payment_orchestrator::api::proto::{self, SessionStatus};
use tonic::Code;

use super::support::harness::*;

fn line(sku: &str, quantity: i64, unit_price: i64, tax_rate: &str) -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: sku.into(),
        name: sku.into(),
        quantity,
        unit_price,
        tax_rate: tax_rate.into(),
        ..Default::default()
    }
}

/// 100.00 plus 25% tax, and two of 12.50 without: 150.00.
fn lines_of_150() -> Vec<proto::ItemLine> {
    vec![line("shoes", 1, 10000, "25"), line("socks", 2, 1250, "0")]
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn update(session: &proto::Session, paths: &[&str]) -> proto::UpdateSessionRequest {
    proto::UpdateSessionRequest {
        session_id: session.id.clone(),
        idempotency_key: new_key(),
        update_mask: mask(paths),
        ..Default::default()
    }
}

async fn updated(
    server: &TestServer,
    request: proto::UpdateSessionRequest,
) -> Result<proto::Session, tonic::Status> {
    server
        .sessions()
        .update_session(request)
        .await
        .map(tonic::Response::into_inner)
}

/// What an update may change, as the session shows it.
fn changeable(session: &proto::Session) -> (i64, Vec<String>, bool, usize) {
    (
        session.amount,
        session
            .items
            .iter()
            .map(|l| l.sku_reference.clone())
            .collect(),
        session.webhook.is_some(),
        session.metadata.len(),
    )
}

#[tokio::test]
async fn amount_and_items_change_and_the_submit_uses_them() {
    let server = TestServer::start().await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;
    let mut request = update(&session, &["amount", "items"]);
    request.amount = 15000;
    request.items = lines_of_150();
    // A value outside the mask is left alone.
    request.metadata = [("cart".to_owned(), "7".to_owned())].into();
    let changed = updated(&server, request.clone()).await.expect("updated");
    assert_eq!(changed.amount, 15000);
    assert_eq!(changed.items.len(), 2);
    assert!(changed.metadata.is_empty(), "metadata was not in the mask");
    assert_eq!(changed.status(), SessionStatus::Open);
    assert_eq!(
        changeable(&server.sessions().session(&session.id).await),
        changeable(&changed)
    );

    // The same key again replays; the key with another request is refused.
    assert_eq!(
        updated(&server, request.clone()).await.expect("replay"),
        changed
    );
    let mut other = request.clone();
    other.update_mask = mask(&["metadata"]);
    let reused = updated(&server, other).await.unwrap_err();
    assert_eq!(reason(&reused).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));

    // The old amount no longer adds up; the new one does, with the lines.
    let refused = submit(&server, &session.id, vec![card(12000, "tok")])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let payment = submit(
        &server,
        &session.id,
        vec![card(13000, "tok"), gift(2000, "tok")],
    )
    .await
    .expect("submitted");
    assert_eq!(payment.amount, 15000);
    let authorization = payment.authorization.as_ref().expect("authorization");
    assert_eq!(
        authorization
            .items
            .iter()
            .map(|l| l.sku_reference.as_str())
            .collect::<Vec<_>>(),
        ["shoes", "socks"]
    );
    assert_eq!(ledger(&server, "ingenico")[0].authorized, 13000);

    // Submitted: no more changes.
    let mut late = update(&session, &["amount"]);
    late.amount = 100;
    let late = updated(&server, late).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late).as_deref(), Some("SESSION_NOT_OPEN"));
    assert_eq!(server.sessions().session(&session.id).await.amount, 15000);
}

#[tokio::test]
async fn bad_updates_name_every_field_and_change_nothing() {
    let server = TestServer::start().await;
    let mut create = create_request(15000, proto::CaptureMode::Manual);
    create.items = lines_of_150();
    let session = server.sessions().opened(create).await;
    let before = changeable(&session);

    let mut bad = update(&session, &["amount", "currency", "items"]);
    bad.amount = -5;
    bad.items = vec![line("", 1, 100, "x")];
    let status = updated(&server, bad).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations(&status).into_iter().map(|(f, _)| f).collect();
    for field in [
        "update_mask",
        "amount",
        "items[0].sku_reference",
        "items[0].tax_rate",
    ] {
        assert!(fields.iter().any(|f| f == field), "{field} in {fields:?}");
    }

    // An amount the session's lines do not add up to.
    let mut amount_only = update(&session, &["amount"]);
    amount_only.amount = 14000;
    let status = updated(&server, amount_only).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status)[0].0, "amount");

    // A mask that names nothing, and no values to imply one.
    let mut empty = update(&session, &[]);
    empty.update_mask = None;
    let status = updated(&server, empty).await.unwrap_err();
    assert_eq!(violations(&status)[0].0, "update_mask");

    // Another merchant's session is not found.
    let mut foreign = update(&session, &["amount"]);
    foreign.amount = 100;
    let status = server
        .sessions_as(Some(OTHER_KEY))
        .update_session(foreign)
        .await
        .refusal();
    assert_eq!(status.code(), Code::NotFound);

    assert_eq!(
        changeable(&server.sessions().session(&session.id).await),
        before
    );

    // "*" replaces all four: no webhook, no lines, no metadata.
    let mut all = update(&session, &["*"]);
    all.amount = 9000;
    let cleared = updated(&server, all).await.expect("updated");
    assert_eq!(changeable(&cleared), (9000, Vec::new(), false, 0));
}

#[tokio::test]
async fn retries_of_answered_requests_get_their_answers_after_the_session_changed() {
    let server = TestServer::start().await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;

    // A declined submit leaves the session OPEN; the amount then changes.
    let declined = proto::SubmitSessionRequest {
        session_id: session.id.clone(),
        idempotency_key: new_key(),
        split: vec![card(12000, "authorize=decline")],
    };
    let first = server
        .sessions()
        .submit_session(declined.clone())
        .await
        .answer();
    assert_eq!(first.state(), proto::PaymentState::Failed);
    let mut to_200 = update(&session, &["amount"]);
    to_200.amount = 20000;
    let answered = updated(&server, to_200.clone()).await.expect("updated");
    let mut to_150 = update(&session, &["amount", "items"]);
    to_150.amount = 15000;
    to_150.items = lines_of_150();
    updated(&server, to_150).await.expect("updated");

    // The submit's retry: its answer, though its legs no longer add up.
    let again = server.sessions().submit_session(declined).await.answer();
    assert_eq!(again.id, first.id);
    // The first update's retry: its answer, though its amount no longer
    // matches the lines the second one added.
    assert_eq!(
        updated(&server, to_200.clone()).await.expect("replayed"),
        answered
    );
    // A new request like it is refused, and changes nothing.
    let fresh = proto::UpdateSessionRequest {
        idempotency_key: new_key(),
        ..to_200.clone()
    };
    assert_eq!(
        updated(&server, fresh).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(server.sessions().session(&session.id).await.amount, 15000);

    // Removing the webhook is another request than keeping it.
    let mut metadata = update(&session, &["metadata"]);
    metadata.metadata = [("cart".to_owned(), "7".to_owned())].into();
    updated(&server, metadata.clone()).await.expect("updated");
    let removing = proto::UpdateSessionRequest {
        update_mask: mask(&["webhook", "metadata"]),
        ..metadata
    };
    let reused = updated(&server, removing).await.unwrap_err();
    assert_eq!(reason(&reused).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
}

/// A CreateSession replay after updates answers the session as created, on
/// the embedded store and on Redis alike.
#[tokio::test]
async fn a_create_replayed_after_updates_answers_the_session_as_created() {
    let redis = super::support::redis_server::RedisServer::start();
    let url = redis.url();
    for server in [
        TestServer::start().await,
        TestServer::start_with(&["--redis-url", &url]).await,
    ] {
        let create = create_request(12000, proto::CaptureMode::Manual);
        let created = server.sessions().opened(create.clone()).await;
        let mut change = update(&created, &["amount", "metadata"]);
        change.amount = 9000;
        change.metadata = [("cart".to_owned(), "7".to_owned())].into();
        updated(&server, change.clone()).await.expect("updated");
        change.idempotency_key = new_key();
        change.amount = 8000;
        updated(&server, change).await.expect("updated again");
        let replayed = server.sessions().opened(create).await;
        assert_eq!(replayed, created);
        assert_eq!(server.sessions().session(&created.id).await.amount, 8000);
    }
}
