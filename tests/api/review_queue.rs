//! `ListOperations`: the operators' review queue across merchants, and each
//! merchant's own operations with filters and page tokens.

use std::time::Duration;

use payment_orchestrator::api::proto;
use tonic::Code;

use super::support::harness::*;

/// A card capture of `merchant` (by API key) whose answer is lost and whose
/// partner cannot be asked: it stays UNCERTAIN.
async fn uncertain_capture(server: &TestServer, key: &str) -> proto::Operation {
    // Each merchant's own card with the same scenario.
    let token = format!("card={key},capture=timeout,lookup=error");
    let payment = submitted_as(server, key, 5_000, &token).await;
    server
        .payments_as(Some(key))
        .captured(capture(&payment, Some(3_000)))
        .await
        .operation
}

fn review_queue() -> proto::ListOperationsRequest {
    proto::ListOperationsRequest {
        requires_review: Some(true),
        ..Default::default()
    }
}

fn ids(response: &proto::ListOperationsResponse) -> Vec<&str> {
    response.operations.iter().map(|o| o.id.as_str()).collect()
}

#[tokio::test]
async fn the_review_queue_spans_merchants_for_operators_and_only_its_own_for_a_merchant() {
    let server = TestServer::start().await;
    let ours = uncertain_capture(&server, DEMO_KEY).await;
    let theirs = uncertain_capture(&server, OTHER_KEY).await;
    // A capture that succeeds, a second later.
    server.clock.advance(Duration::from_secs(1));
    let fine = authorized(&server, vec![card(2_000, "tok")]).await;
    let fine = captured(&server, capture(&fine, None)).await.operation;
    // A day on, the resolver gives up on the two and flags them.
    server.resolve_after(Duration::from_secs(60)).await;
    server.resolve_after(Duration::from_secs(25 * 3600)).await;

    let mut admin = server.admin();
    let queue = admin.list_operations(review_queue()).await.answer();
    let mut queued = ids(&queue);
    queued.sort();
    let mut expected = vec![ours.id.as_str(), theirs.id.as_str()];
    expected.sort();
    assert_eq!(queued, expected);
    assert!(queue.operations.iter().all(|o| o.requires_review));

    let mut demo = server.payments();
    let own = demo.list_operations(review_queue()).await.answer();
    assert_eq!(ids(&own), [ours.id.as_str()]);
    // Another merchant's queue: nothing, not an error.
    let foreign = demo
        .list_operations(proto::ListOperationsRequest {
            merchant: "other".into(),
            ..review_queue()
        })
        .await
        .answer();
    assert!(foreign.operations.is_empty());

    // Every capture of the merchant, newest first, one per page.
    let captures = proto::ListOperationsRequest {
        kind: proto::OperationKind::Capture.into(),
        page_size: 1,
        ..Default::default()
    };
    let first = demo.list_operations(captures.clone()).await.answer();
    assert_eq!(ids(&first), [fine.id.as_str()]);
    let second = demo
        .list_operations(proto::ListOperationsRequest {
            page_token: first.next_page_token.clone(),
            ..captures.clone()
        })
        .await
        .answer();
    assert_eq!(ids(&second), [ours.id.as_str()]);
    let last = demo
        .list_operations(proto::ListOperationsRequest {
            page_token: second.next_page_token.clone(),
            ..captures.clone()
        })
        .await
        .answer();
    assert!(
        last.operations.is_empty() && last.next_page_token.is_empty(),
        "{last:?}"
    );

    // Operators list any operations of one merchant, or the open ones of all.
    let refused = admin
        .list_operations(proto::ListOperationsRequest {
            kind: proto::OperationKind::Capture.into(),
            ..Default::default()
        })
        .await
        .refusal();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let other = admin
        .list_operations(proto::ListOperationsRequest {
            merchant: "other".into(),
            kind: proto::OperationKind::Capture.into(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(ids(&other), [theirs.id.as_str()]);
    // An oversized page is lowered to the maximum, not refused.
    let big = demo
        .list_operations(proto::ListOperationsRequest {
            page_size: 1_000_000,
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(big.operations.len(), 4, "two authorizations, two captures");
}
