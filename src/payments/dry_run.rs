//! Dry runs (`validate_only`): what a capture, refund or void would do now,
//! with nothing executed or stored.
//!
//! The same request the real call builds is opened on a copy of the payment
//! as read, so every check and the allocation are the real call's; then the
//! copy takes a success on every leg, for the amounts after it. Nothing is
//! written (no operation, reservation, idempotency record or webhook) and no
//! partner is called; a circuit due for its trial is only looked at.

use super::{
    Found, Idempotent, OperationCommand, OperationResult, PaymentError, PaymentView, Payments,
    Precondition, found_record, operation_result, outcome_of,
};
use crate::{
    domain::{operation::TransactionOutcome, status::TransactionStatus},
    store::{PaymentWrite, Shard, Step, Write},
};

impl Payments {
    /// The answer the operation call would give now, as a dry run. A key
    /// already used answers as a retry would: the stored answer (or
    /// refusal), `REQUEST_IN_PROGRESS` while its call runs,
    /// `IDEMPOTENCY_KEY_REUSED` for another request.
    pub async fn dry_run(
        &self,
        merchant: &str,
        request: Idempotent<OperationCommand>,
    ) -> Result<OperationResult, PaymentError> {
        let payment_id = request.command.payment_id;
        let (mut operation_request, origin) = self.operation_request(merchant, request);
        let header = self.owned_header(merchant, payment_id).await?;
        // A key already used: as a retry is answered.
        let probe = |step: &mut Step| {
            step.payment = Some(PaymentWrite {
                header: Write::Check {
                    expected: u64::MAX,
                    id: payment_id,
                },
                operations: Vec::new(),
            });
        };
        match self.key_state(Shard::of(payment_id), origin, probe).await? {
            Some(state) => {
                return match found_record(state)? {
                    Found::Answer(outcome) => operation_result(header.value, *outcome),
                    // The real call would take the work over: nothing a
                    // dry run may do.
                    Found::Abandoned => Err(PaymentError::RequestInProgress),
                };
            }
            None => {
                // Its record is gone but its operation is there (ids are
                // derived from the key).
                if let Some((stored, operation)) =
                    self.store.operation(payment_id, origin.record).await?
                {
                    if operation.origin.map(|o| o.fingerprint) != Some(origin.fingerprint) {
                        return Err(PaymentError::IdempotencyKeyReused);
                    }
                    if !operation.status.is_final() {
                        return Err(PaymentError::RequestInProgress);
                    }
                    let outcome = outcome_of(&stored.value, &[], &operation, &[]);
                    return operation_result(stored.value, outcome);
                }
            }
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
                partner_token: None,
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
