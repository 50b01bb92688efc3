use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Unavailable for the first `failures` attempts, then approved.
#[derive(Debug)]
struct Propagating {
    failures: u32,
    attempts: AtomicU32,
}

#[async_trait]
impl Partner for Propagating {
    async fn send(&self, _: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if attempt < self.failures {
            return Err(PartnerError::Unavailable {
                description: "404 order not found".into(),
            });
        }
        Ok(PartnerAnswer {
            settled: true,
            reference: "r".into(),
            partner_status: "OK".into(),
            description: String::new(),
            instrument: None,
        })
    }
    async fn lookup(&self, _: &PartnerRequest, _: Option<&str>) -> Result<Lookup, PartnerError> {
        Ok(Lookup::NotFound)
    }
}

fn request() -> PartnerRequest {
    PartnerRequest {
        kind: OperationKind::Capture,
        idempotency_key: "k".into(),
        amount: Amount::from_minor(100).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        method: "invoice".into(),
        token: PaymentToken::new("t".into()),
        authorization_reference: None,
        order_reference: "o".into(),
        merchant_reference: String::new(),
        reason: String::new(),
        items: Vec::new(),
        refunded_before: Amount::ZERO,
    }
}

fn partners(failures: u32, window: Duration) -> (Partners, Arc<Propagating>) {
    let adapter = Arc::new(Propagating {
        failures,
        attempts: AtomicU32::new(0),
    });
    let mut configured = ConfiguredPartner::new(adapter.clone(), "walley", vec![]);
    configured.retry = RetryPolicy {
        first_pause: Duration::from_secs(1),
        window,
    };
    (
        Partners::new(
            BTreeMap::from([("p".to_owned(), configured)]),
            Arc::new(crate::clock::SystemClock),
        ),
        adapter,
    )
}

#[tokio::test(start_paused = true)]
async fn unavailable_answers_are_retried_with_backoff_within_the_window() {
    // Pauses of 1 s, 2 s and 4 s fit a 10 s window: the fourth attempt
    // finds the order.
    let (partners, adapter) = partners(3, Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    assert!(partners.send("p", &request()).await.is_ok());
    assert_eq!(adapter.attempts.load(Ordering::SeqCst), 4);
    assert_eq!(started.elapsed(), Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn a_window_that_runs_out_leaves_the_answer_unavailable() {
    let (partners, adapter) = partners(10, Duration::from_secs(5));
    let result = partners.send("p", &request()).await;
    assert!(matches!(result, Err(PartnerError::Unavailable { .. })));
    // 1 s and 2 s fit; the 4 s pause would end past the window.
    assert_eq!(adapter.attempts.load(Ordering::SeqCst), 3);
}
