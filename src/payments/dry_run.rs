//! Dry runs (`validate_only`): what a capture, refund or void would do now,
//! with nothing executed or stored.
//!
//! The same request the real call builds is opened on a copy of the payment
//! as read, so every check and the allocation are the real call's; then the
//! copy takes a success on every leg, for the amounts after it. Nothing is
//! written (no operation, reservation, idempotency record or webhook) and no
//! partner is called; a circuit due for its trial is only looked at.

use super::{
    Idempotent, OperationCommand, OperationResult, PaymentError, PaymentView, Payments,
    Precondition, operation_result, outcome_of,
};
use crate::domain::{operation::TransactionOutcome, status::TransactionStatus};

impl Payments {
    /// The answer the operation call would give now, as a dry run. A key
    /// whose operation exists answers as a retry would: the operation once
    /// final, `REQUEST_IN_PROGRESS` before, `IDEMPOTENCY_KEY_REUSED` for
    /// another request. (A key whose call was refused made no operation: it
    /// is checked anew.)
    pub async fn dry_run(
        &self,
        merchant: &str,
        request: Idempotent<OperationCommand>,
    ) -> Result<OperationResult, PaymentError> {
        let payment_id = request.command.payment_id;
        let mut operation_request = self.operation_request(merchant, request);
        let Some(origin) = operation_request.origin else {
            return Err(PaymentError::Internal(
                "a request without its origin".into(),
            ));
        };
        let header = self.owned_header(merchant, payment_id).await?;
        if let Some((stored, operation)) = self.store.operation(payment_id, origin.record).await? {
            if operation.origin.map(|o| o.fingerprint) != Some(origin.fingerprint) {
                return Err(PaymentError::IdempotencyKeyReused);
            }
            if !operation.status.is_final() {
                return Err(PaymentError::RequestInProgress);
            }
            // As a retry whose record is gone is answered.
            let outcome = outcome_of(&stored.value, &[], &operation, &[]);
            return operation_result(stored.value, outcome);
        }
        let partners = header.value.legs.iter().map(|leg| leg.partner.as_str());
        operation_request.avoid = self.partners.avoided(partners);
        let now = self.clock.now();
        let mut after = header.value;
        let mut operation = after
            .open_operation(origin.record, &operation_request, now)
            .map_err(|refusal| PaymentError::from(Precondition::from(refusal)))?;
        let legs: Vec<_> = operation.transactions.iter().map(|tx| tx.id).collect();
        for transaction in legs {
            let success = TransactionOutcome {
                status: TransactionStatus::Success,
                partner_reference: None,
                partner_status: String::new(),
                partner_status_description: String::new(),
            };
            after.record(&mut operation, transaction, success, now);
        }
        Ok(OperationResult {
            operation,
            payment: PaymentView::now(after, Vec::new()),
            dry_run: true,
        })
    }
}
