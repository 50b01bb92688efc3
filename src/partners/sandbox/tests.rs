use std::time::Duration;

use super::*;
use crate::domain::{money::Currency, payment::PaymentToken};

fn request(
    kind: OperationKind,
    key: &str,
    amount: i64,
    token: &str,
    auth: Option<&str>,
) -> PartnerRequest {
    PartnerRequest {
        kind,
        idempotency_key: key.into(),
        amount: Amount::from_minor(amount).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        method: "creditcard".into(),
        token: PaymentToken::new(token.into()),
        authorization_reference: auth.map(Into::into),
        order_reference: "order-1".into(),
        merchant_reference: String::new(),
        reason: String::new(),
        items: Vec::new(),
        refunded_before: Amount::ZERO,
    }
}

#[test]
fn scenarios_parse_or_say_which_pair_is_wrong() {
    assert_eq!(Scenario::parse("tok_visa_4242"), Ok(Scenario::default()));
    let s = Scenario::parse("capture=pending,refund=timeout,latency=20ms").unwrap();
    assert_eq!(s.outcome(OperationKind::Capture), Outcome::Pending);
    assert_eq!(s.outcome(OperationKind::Refund), Outcome::Timeout);
    assert_eq!(s.latency, Duration::from_millis(20));
    assert!(
        Scenario::parse("capture=maybe")
            .unwrap_err()
            .contains("maybe")
    );
    assert!(Scenario::parse("colour=red").is_err());
    assert!(Scenario::parse("latency=fast").is_err());
    assert!(Scenario::parse("capture=pending,").is_err());
}

#[tokio::test]
async fn refuses_to_capture_more_than_authorized_and_deduplicates() {
    let sandbox = Sandbox::new("ingenico");
    let auth = sandbox
        .send(&request(
            OperationKind::Authorization,
            "a",
            1000,
            "tok",
            None,
        ))
        .await
        .unwrap();
    let capture = |key: &'static str, amount| {
        let sandbox = sandbox.clone();
        let reference = auth.reference.clone();
        async move {
            sandbox
                .send(&request(
                    OperationKind::Capture,
                    key,
                    amount,
                    "",
                    Some(&reference),
                ))
                .await
        }
    };
    assert!(capture("c1", 600).await.is_ok());
    assert!(matches!(
        capture("c2", 600).await,
        Err(PartnerError::Declined { .. })
    ));
    // The same key again is answered from the ledger, not applied twice.
    assert!(capture("c1", 600).await.is_ok());
    let totals = sandbox.authorizations()[&auth.reference].clone();
    assert_eq!(totals.captured, 600);
}

#[tokio::test]
async fn pending_settles_after_lookups_and_lost_reaches_the_ledger_on_resend() {
    let sandbox = Sandbox::new("ingenico");
    let token = "authorize=pending,pending_lookups=2";
    let answer = sandbox
        .send(&request(
            OperationKind::Authorization,
            "a",
            1000,
            token,
            None,
        ))
        .await
        .unwrap();
    assert!(!answer.settled);
    let looked_up = request(OperationKind::Authorization, "a", 1000, token, None);
    assert!(matches!(
        sandbox.lookup(&looked_up, None).await,
        Ok(Lookup::Found(Ok(PartnerAnswer { settled: false, .. })))
    ));
    assert!(matches!(
        sandbox.lookup(&looked_up, None).await,
        Ok(Lookup::Found(Ok(PartnerAnswer { settled: true, .. })))
    ));

    let lost = request(
        OperationKind::Authorization,
        "b",
        1000,
        "authorize=lost",
        None,
    );
    assert!(matches!(
        sandbox.send(&lost).await,
        Err(PartnerError::Unknown { .. })
    ));
    assert_eq!(sandbox.lookup(&lost, None).await, Ok(Lookup::NotFound));
    assert!(sandbox.send(&lost).await.is_ok());
}

/// A forgetting sandbox drops an authorization (its requests, its stored
/// card) once nothing is held on it and no request came on it for the idle
/// time; one asked since, or still holding money, is kept.
#[tokio::test]
async fn a_forgetting_sandbox_drops_what_was_idle_and_settled_and_keeps_the_rest() {
    let idle = Duration::from_millis(200);
    let sandbox = Sandbox::new("ingenico").forgetting_after(idle);
    let authorize = |key: &'static str| {
        let sandbox = sandbox.clone();
        async move {
            sandbox
                .send(&request(
                    OperationKind::Authorization,
                    key,
                    1000,
                    "tok",
                    None,
                ))
                .await
                .unwrap()
                .reference
        }
    };
    let captured = |key: &'static str, reference: String| {
        let sandbox = sandbox.clone();
        async move {
            let capture = request(OperationKind::Capture, key, 1000, "", Some(&reference));
            sandbox.send(&capture).await.unwrap();
        }
    };
    let settled = authorize("a1").await;
    captured("c1", settled.clone()).await;
    let holding = authorize("a2").await;
    let asked = authorize("a3").await;
    // Half the idle time later, the third is captured: asked again.
    tokio::time::sleep(idle / 2).await;
    captured("c3", asked.clone()).await;
    // Past the others' idle time (time passing is the point here).
    tokio::time::sleep(idle / 2 + Duration::from_millis(20)).await;
    let newest = authorize("a4").await;
    let kept: Vec<String> = sandbox.authorizations().into_keys().collect();
    assert_eq!(kept, vec![holding.clone(), asked, newest]);
    assert!(!kept.contains(&settled));
    // Its stored card went with it.
    let stored = request(
        OperationKind::Authorization,
        "a5",
        100,
        &instrument_of(&settled),
        None,
    );
    assert!(matches!(
        sandbox.send(&stored).await,
        Err(PartnerError::Declined { .. })
    ));
    // What still holds money can be captured after any idle time.
    tokio::time::sleep(idle + Duration::from_millis(20)).await;
    authorize("a6").await;
    captured("c2", holding.clone()).await;
    assert_eq!(sandbox.authorizations()[&holding].captured, 1000);
}

/// A pending entry keeps its authorization however long it waits: the
/// service asks about it until it is final.
#[tokio::test]
async fn a_forgetting_sandbox_keeps_an_authorization_with_a_pending_entry() {
    let idle = Duration::from_millis(100);
    let sandbox = Sandbox::new("ingenico").forgetting_after(idle);
    let token = "capture=pending,pending_lookups=1000";
    let authorize = request(OperationKind::Authorization, "a1", 1000, token, None);
    let reference = sandbox.send(&authorize).await.unwrap().reference;
    let capture = request(OperationKind::Capture, "c1", 1000, "", Some(&reference));
    assert!(!sandbox.send(&capture).await.unwrap().settled);
    // Past its idle time (time passing is the point here); the next
    // request makes the sandbox look at what was idle.
    tokio::time::sleep(idle + Duration::from_millis(20)).await;
    let other = request(OperationKind::Authorization, "a2", 100, "tok", None);
    sandbox.send(&other).await.unwrap();
    assert!(sandbox.authorizations().contains_key(&reference));
    assert!(matches!(
        sandbox.lookup(&capture, None).await,
        Ok(Lookup::Found(Ok(_)))
    ));
}
