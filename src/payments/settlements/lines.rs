//! One page of a settlement's lines: each line judged (what it names of
//! ours, how it compares), the transactions it settles claimed in line
//! order, counted into the settlement's totals, then acted on (settled from
//! the report, a missing issue resolved, or an issue raised) and stored.

use std::collections::HashMap;

use futures_util::{StreamExt, stream};
use uuid::Uuid;

use super::{MATCHING_CONCURRENCY, Reading, matching::Named};
use crate::{
    domain::{
        dispute::DisputeSeen,
        money::Currency,
        payment::{Leg, Payment},
        settlement::{
            EntryKind, Line, Match, ReconciliationIssue, SettledBy, SettlementEntry,
            SettlementTransaction, compare,
        },
    },
    payments::{PaymentError, Payments},
};

impl Payments {
    /// Matches, claims, stores and counts one page of lines. The inner
    /// error: the settlement cannot be right (its totals overflow).
    pub(super) async fn read_page(
        &self,
        reading: &mut Reading<'_>,
        lines: Vec<Line>,
    ) -> Result<Result<(), String>, PaymentError> {
        let first = reading.index;
        reading.index += u64::try_from(lines.len()).unwrap_or(u64::MAX);
        let partner = reading.partner;
        let settlement = reading.settlement;
        let currency = reading.report.currency;
        // What each line names, looked up concurrently.
        let named: Vec<Result<Judged, PaymentError>> = stream::iter(lines.into_iter().enumerate())
            .map(|(offset, line)| {
                let index = first + u64::try_from(offset).unwrap_or(u64::MAX);
                self.judge(partner, settlement, currency, index, line)
            })
            .buffered(MATCHING_CONCURRENCY)
            .collect()
            .await;
        let mut judged = named.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Claims, in line order: the first line for a transaction settles it;
        // a later one (here, or in an earlier settlement) is a duplicate.
        let mut claims = Vec::new();
        let mut first_claims = HashMap::new();
        for (at, line) in judged.iter_mut().enumerate() {
            let Some(transaction) = line.claims() else {
                continue;
            };
            if first_claims.insert(transaction, line.index).is_some() {
                line.duplicate();
            } else {
                claims.push((at, transaction));
            }
        }
        let requested: Vec<(Uuid, SettledBy)> = claims
            .iter()
            .map(|(at, transaction)| {
                let index = judged[*at].index;
                (
                    *transaction,
                    SettledBy {
                        settlement,
                        line: index,
                    },
                )
            })
            .collect();
        let held = self
            .store
            .claim_settled(&requested, reading.retain_until)
            .await?;
        for (((at, transaction), (_, wanted)), holder) in claims.iter().zip(&requested).zip(held) {
            let holds = self
                .holds_claim(*transaction, holder, *wanted, reading.retain_until)
                .await?;
            if !holds {
                judged[*at].duplicate();
            }
        }
        // Counted, then acted on: settled from the report, resolved, or
        // raised as an issue. A line whose amount would overflow the totals
        // cannot be right: it is kept, not counted.
        for line in &mut judged {
            reading.sums.count_line();
            let Some(entry) = line.line.entry() else {
                continue;
            };
            if entry.currency != currency {
                continue;
            }
            reading.sums.add(entry);
            if line.matched.counts() && reading.totals.add(entry).is_err() {
                line.matched = Match::UnreadableLine;
                line.note =
                    Some("its amount overflows the settlement's totals: kept, not counted".into());
            }
        }
        let acted: Vec<Result<Acted, PaymentError>> = stream::iter(judged)
            .map(|line| self.act_on(reading, line))
            .buffered(MATCHING_CONCURRENCY)
            .collect()
            .await;
        let mut stored = Vec::with_capacity(acted.len());
        for result in acted {
            let Acted {
                line,
                new_issue,
                merchant,
            } = result?;
            reading.issues += u64::from(new_issue);
            reading.mismatched += u64::from(line.matched != Match::Matched);
            match merchant {
                Some(merchant) => {
                    reading.merchants.insert(merchant);
                }
                None => reading.unattributed = true,
            }
            stored.push(line);
        }
        self.store
            .put_settlement_lines(settlement, &stored, reading.retain_until)
            .await?;
        Ok(Ok(()))
    }

    /// Whether `wanted` settles the transaction: it holds the claim, or the
    /// line that holds it is of a settlement that was never stored (it
    /// failed, or stopped before it was) — such a claim gives way, so that
    /// a transaction is settled by the first settlement that is.
    async fn holds_claim(
        &self,
        transaction: Uuid,
        holder: SettledBy,
        wanted: SettledBy,
        retain_until: std::time::SystemTime,
    ) -> Result<bool, PaymentError> {
        if holder.is(wanted) {
            return Ok(true);
        }
        let stale = holder.settlement != wanted.settlement
            && self.store.settlement(holder.settlement).await?.is_none();
        Ok(stale
            && self
                .store
                .replace_settled(transaction, holder, wanted, retain_until)
                .await?)
    }

    /// What one line is: what it names of ours and how it compares.
    async fn judge(
        &self,
        partner: &str,
        settlement: Uuid,
        currency: Currency,
        index: u64,
        line: Line,
    ) -> Result<Judged, PaymentError> {
        let entry = match &line {
            Line::Entry(entry) => entry,
            Line::Unreadable(unreadable) => {
                let note = format!(
                    "a line could not be read ({}); it is kept as the partner sent it and not counted",
                    unreadable.why
                );
                return Ok(Judged {
                    index,
                    line,
                    matched: Match::UnreadableLine,
                    named: Named::Nothing(None),
                    note: Some(note),
                });
            }
        };
        let claim = SettledBy {
            settlement,
            line: index,
        };
        let mut note = None;
        let named = match self.transaction_named(partner, entry, claim).await? {
            // Never sent: nothing the partner could have settled. The line
            // is not ours, and the transaction is not settled from it.
            Named::Found(found) if entry.kind.operation_kind().is_some() && !found.was_sent() => {
                note = Some(
                    "the line names a transaction of ours never sent to the partner".to_owned(),
                );
                Named::Nothing(Some(Box::new(found.header.value)))
            }
            named => named,
        };
        let mut matched = match (&named, entry.kind.operation_kind()) {
            (Named::Found(found), Some(_)) => compare(entry, Some(&found.ours())),
            (Named::Ambiguous(many), _) => {
                note = Some(format!(
                    "the line names no action reference and {many} transactions of ours fit its order, kind and amount: none is guessed"
                ));
                Match::UnknownToUs
            }
            (Named::Nothing(_), Some(_)) => Match::UnknownToUs,
            // A fee, an adjustment or a chargeback names no operation: it is
            // ours when its order is, and a fee of the settlement is — with
            // the sign of its kind (a positive chargeback is not one).
            (_, None) if !entry.sign_agrees() => Match::KindMismatch,
            (Named::Found(_) | Named::Nothing(Some(_)), None) => Match::Matched,
            (Named::Nothing(None), None) if entry.kind == EntryKind::Fee => Match::Matched,
            (Named::Nothing(None), None) => Match::UnknownToUs,
        };
        if entry.currency != currency {
            note = Some(format!(
                "the line is in {}, its settlement in {currency}: it is not counted",
                entry.currency
            ));
            if matched == Match::Matched {
                matched = Match::AmountMismatch;
            }
        }
        Ok(Judged {
            index,
            line,
            matched,
            named,
            note,
        })
    }

    /// Stores what a judged line came to: an open transaction it settles is
    /// settled from the report, a MISSING issue on it resolved; a line that
    /// does not match raises its issue.
    async fn act_on(&self, reading: &Reading<'_>, judged: Judged) -> Result<Acted, PaymentError> {
        let Judged {
            index,
            line,
            matched,
            named,
            note,
        } = judged;
        let (payment, found) = match named {
            Named::Found(found) => (Some(found.header.value.clone()), Some(*found)),
            Named::Nothing(payment) => (payment.map(|p| *p), None),
            Named::Ambiguous(_) => (None, None),
        };
        let transaction = SettlementTransaction {
            index,
            matched,
            operation_id: found.as_ref().map(|f| f.operation.id),
            partner_transaction_id: found.as_ref().map(|f| f.transaction),
            payment_id: payment.as_ref().map(|p| p.id),
            line,
        };
        let merchant = payment.as_ref().map(|p| p.merchant.clone());
        if matched != Match::Matched {
            let issue = self.line_issue(
                reading,
                &transaction,
                found.as_ref(),
                payment.as_ref(),
                note,
            );
            let new_issue = self
                .raise(&issue, payment.as_ref(), reading.retain_until)
                .await?;
            return Ok(Acted {
                line: transaction,
                new_issue,
                merchant,
            });
        }
        if let (Some(payment), Some(entry)) = (&payment, transaction.line.entry())
            && entry.kind == EntryKind::Chargeback
        {
            let leg = found.as_ref().and_then(|f| {
                let tx = f.operation.transaction(f.transaction)?;
                Some(tx.leg)
            });
            self.chargeback(reading, payment, leg, entry, index).await?;
        }
        if let Some(found) = found
            && transaction
                .line
                .entry()
                .and_then(|e| e.kind.operation_kind())
                .is_some()
        {
            let ours = found.ours();
            let tx = found.transaction;
            let succeeded_long_ago = found
                .operation
                .transactions
                .iter()
                .find(|t| t.id == tx)
                .is_some_and(|t| {
                    t.updated_at + self.settings.settlements.missing_after <= self.clock.now()
                });
            if !ours.status.is_final() {
                self.settle_from_report(found.header, found.operation, tx, &reading.note)
                    .await?;
            } else if succeeded_long_ago {
                let resolution = format!(
                    "settled in settlement {} of {} (line {index})",
                    reading.report.reference, reading.partner
                );
                self.store
                    .resolve_issue(
                        ReconciliationIssue::id_for_missing(tx),
                        &resolution,
                        self.clock.now(),
                    )
                    .await?;
            }
        }
        Ok(Acted {
            line: transaction,
            new_issue: false,
            merchant,
        })
    }
}

impl Payments {
    /// A chargeback line of one of our payments opens a dispute on the leg
    /// its reference names, else the leg at this partner whose token is the
    /// line's order id, else the first at this partner. Each line is a
    /// dispute of its own: two partial chargebacks of one order are two.
    async fn chargeback(
        &self,
        reading: &Reading<'_>,
        payment: &Payment,
        named: Option<usize>,
        entry: &SettlementEntry,
        index: u64,
    ) -> Result<(), PaymentError> {
        let at_partner = |leg: &&Leg| leg.partner == reading.partner;
        let order = self.spelt(reading.partner, &entry.partner_reference);
        let on_order = |leg: &Leg| self.spelt(reading.partner, leg.token.expose()) == order;
        let leg = named
            .or_else(|| {
                payment
                    .legs
                    .iter()
                    .position(|l| at_partner(&l) && on_order(l))
            })
            .or_else(|| payment.legs.iter().position(|l| at_partner(&l)));
        let Some(leg) = leg else {
            return Ok(());
        };
        let reference = format!("{}:{index}", reading.report.reference);
        let seen = DisputeSeen::Disputed {
            reference,
            amount: entry.magnitude(),
            reason: format!(
                "a chargeback in settlement {} of {} (line {index})",
                reading.report.reference, reading.partner
            ),
        };
        self.see_dispute(payment.id, leg, seen).await?;
        Ok(())
    }
}

/// What acting on a line came to.
pub(super) struct Acted {
    line: SettlementTransaction,
    /// An issue was first found now.
    new_issue: bool,
    /// The merchant whose payment the line names.
    merchant: Option<String>,
}

/// A line judged: what it names of ours, and how it compares.
struct Judged {
    index: u64,
    line: Line,
    matched: Match,
    named: Named,
    /// Why it does not match, where the importer knows better than the
    /// comparison (another currency, an ambiguous order, unreadable).
    note: Option<String>,
}

impl Judged {
    /// The transaction of ours this line settles: a capture or refund line
    /// that names one and agrees with it in kind and sign (matched, or for
    /// another amount: it still shows the transaction, which is then not
    /// missing from the settlements).
    fn claims(&self) -> Option<Uuid> {
        let settles = self
            .line
            .entry()
            .is_some_and(|e| e.kind.operation_kind().is_some());
        let shows = matches!(self.matched, Match::Matched | Match::AmountMismatch);
        match &self.named {
            Named::Found(found) if settles && shows => Some(found.transaction),
            _ => None,
        }
    }

    fn duplicate(&mut self) {
        self.matched = Match::Duplicate;
        self.note = None;
    }
}
