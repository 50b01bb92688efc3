//! The sandbox's books: what each authorization holds, the entries its
//! operations booked, the settlements it closed, and what it forgets.

use std::time::Instant;

use super::*;

impl Ledger {
    /// Notes a request (`key`) on `authorization` at `now`.
    pub(super) fn touch(&mut self, authorization: &str, key: &str, now: Instant) {
        if self.forget_after.is_none() {
            return;
        }
        if let Some(auth) = self.authorizations.get_mut(authorization) {
            auth.keys.push(key.to_owned());
        }
        self.refresh(authorization, now);
    }

    /// Notes that `authorization` was asked about at `now`.
    pub(super) fn refresh(&mut self, authorization: &str, now: Instant) {
        if self.forget_after.is_none() {
            return;
        }
        if let Some(auth) = self.authorizations.get_mut(authorization) {
            auth.last_request = now;
            if !auth.queued {
                auth.queued = true;
                self.activity.push_back((now, authorization.to_owned()));
            }
        }
    }

    /// Forgets the authorizations with nothing held on them that were idle
    /// for `forget_after` by `now`.
    pub(super) fn forget_idle(&mut self, now: Instant) {
        let Some(forget_after) = self.forget_after else {
            return;
        };
        // Authorizations asked since, or still holding money, listed again
        // after this pass (so a zero idle time cannot keep it going).
        let mut held = Vec::new();
        while let Some((at, _)) = self.activity.front()
            && *at + forget_after <= now
        {
            let Some((_, reference)) = self.activity.pop_front() else {
                break;
            };
            let Some(auth) = self.authorizations.get_mut(&reference) else {
                continue;
            };
            // Asked again since: listed again, as of then.
            if auth.last_request + forget_after > now {
                held.push((auth.last_request, reference));
                continue;
            }
            // Money still held on it (nothing captured or voided yet), or an
            // entry still pending (the service will ask about it), keeps it:
            // looked at again after another idle time.
            let totals = &auth.totals;
            let pending = (auth.keys.iter()).any(|key| {
                (self.entries.get(key))
                    .is_some_and(|e| matches!(e.state, EntryState::Pending { .. }))
            });
            if pending || totals.authorized > totals.captured + totals.voided {
                auth.last_request = now;
                held.push((now, reference));
                continue;
            }
            if let Some(auth) = self.authorizations.remove(&reference) {
                for key in &auth.keys {
                    self.entries.remove(key);
                    self.lost_once.remove(key);
                }
                self.instruments.remove(&instrument_of(&reference));
            }
        }
        self.activity.extend(held);
    }

    /// Keeps the newest [`KEPT_RECEIVED`] requests and arrivals for
    /// inspection: under endless load the logs would grow for ever (and be
    /// copied to fresh memory at every doubling).
    pub(super) fn trim_logs(&mut self) {
        if self.received.len() > 2 * KEPT_RECEIVED {
            self.received.drain(..self.received.len() - KEPT_RECEIVED);
        }
        if self.arrivals.len() > 2 * KEPT_RECEIVED {
            self.arrivals.drain(..self.arrivals.len() - KEPT_RECEIVED);
        }
    }

    /// Closes what succeeded since the last close into one settlement per
    /// currency, dated `day`, with the prepared discrepancies.
    pub(super) fn close(&mut self, partner: &str, day: Day) {
        let mut open: Vec<&mut Entry> = self
            .entries
            .values_mut()
            .filter(|e| !e.settled && e.line.is_some() && matches!(e.state, EntryState::Succeeded))
            .collect();
        open.sort_by_key(|e| e.sequence);
        let mut lines: Vec<SettlementEntry> = Vec::new();
        for entry in open {
            entry.settled = true;
            lines.extend(entry.line.clone());
        }
        for discrepancy in std::mem::take(&mut self.prepared) {
            match discrepancy {
                Discrepancy::Drop(reference) => lines.retain(|l| l.action_reference != reference),
                Discrepancy::Alter(reference, amount) => lines
                    .iter_mut()
                    .filter(|l| l.action_reference == reference)
                    .for_each(|l| l.amount = amount.minor() * l.amount.signum()),
                Discrepancy::Unknown(line) => lines.push(line),
            }
        }
        let mut by_currency: BTreeMap<&'static str, (Currency, Vec<SettlementEntry>)> =
            BTreeMap::new();
        for line in lines {
            by_currency
                .entry(line.currency.code())
                .or_insert_with(|| (line.currency, Vec::new()))
                .1
                .push(line);
        }
        for (_, (currency, entries)) in by_currency {
            let number = self.settlements.len() + 1;
            self.settlements.push(ClosedSettlement {
                report: SettlementReport {
                    reference: format!("{partner}-S{number:06}"),
                    payout_reference: format!("PAYOUT-{partner}-{number:06}"),
                    date: day,
                    currency,
                    fees: Amount::ZERO,
                    control: Control {
                        count: Some(u64::try_from(entries.len()).unwrap_or(u64::MAX)),
                        ..Control::default()
                    },
                },
                entries,
            });
        }
    }

    /// Whether the authorization can take `amount` more of `kind`, by its
    /// totals and the partner's capabilities; else the decline code.
    pub(super) fn fits(
        &self,
        kind: OperationKind,
        authorization: &str,
        amount: i64,
        capabilities: &Capabilities,
    ) -> Result<(), &'static str> {
        let Some(auth) = self.authorizations.get(authorization) else {
            return Err("UNKNOWN_AUTHORIZATION");
        };
        let t = &auth.totals;
        let open = t.authorized - t.captured - t.voided;
        let refundable = t.captured - t.refunded;
        let (left, whole, again) = match kind {
            OperationKind::Authorization => return Ok(()),
            OperationKind::Capture => (
                open,
                (
                    capabilities.partial_capture,
                    "PARTIAL_CAPTURE_NOT_SUPPORTED",
                ),
                (
                    capabilities.multiple_captures || t.captured == 0,
                    "MULTIPLE_CAPTURES_NOT_SUPPORTED",
                ),
            ),
            OperationKind::Refund => (
                refundable,
                (capabilities.partial_refund, "PARTIAL_REFUND_NOT_SUPPORTED"),
                (
                    capabilities.multiple_refunds || t.refunded == 0,
                    "MULTIPLE_REFUNDS_NOT_SUPPORTED",
                ),
            ),
            OperationKind::Void => (
                open,
                (capabilities.partial_void, "PARTIAL_VOID_NOT_SUPPORTED"),
                (true, ""),
            ),
        };
        if amount > left {
            return Err("AMOUNT_EXCEEDS_AUTHORIZATION");
        }
        if !again.0 {
            return Err(again.1);
        }
        if !whole.0 && amount != left {
            return Err(whole.1);
        }
        Ok(())
    }

    pub(super) fn book(&mut self, kind: OperationKind, authorization: &str, amount: i64) {
        let Some(auth) = self.authorizations.get_mut(authorization) else {
            return;
        };
        let t = &mut auth.totals;
        let slot = match kind {
            OperationKind::Authorization => &mut t.authorized,
            OperationKind::Capture => &mut t.captured,
            OperationKind::Refund => &mut t.refunded,
            OperationKind::Void => &mut t.voided,
        };
        *slot += amount;
    }

    pub(super) fn lookup(&mut self, key: &str) -> Result<Lookup, PartnerError> {
        let lookups_fail = self.entries.get(key).is_some_and(|entry| {
            self.authorizations
                .get(&entry.authorization)
                .is_some_and(|auth| auth.scenario.lookups_fail)
        });
        if lookups_fail {
            return Err(PartnerError::Unknown {
                description: "the sandbox's status lookup answered 500".into(),
            });
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return Ok(Lookup::NotFound);
        };
        let settle = match &mut entry.state {
            EntryState::Pending {
                lookups_left,
                decline,
            } => {
                *lookups_left = lookups_left.saturating_sub(1);
                (*lookups_left == 0).then_some(*decline)
            }
            _ => None,
        };
        if let Some(decline) = settle {
            entry.state = if decline {
                EntryState::Declined("DECLINED")
            } else {
                EntryState::Succeeded
            };
            if decline {
                let (kind, authorization, amount) =
                    (entry.kind, entry.authorization.clone(), entry.amount);
                self.book(kind, &authorization, -amount);
            }
        }
        let answer = self.entries.get(key).map(Entry::answer);
        Ok(answer.map_or(Lookup::NotFound, Lookup::Found))
    }
}

impl Entry {
    pub(super) fn answer(&self) -> Result<PartnerAnswer, PartnerError> {
        match self.state {
            EntryState::Succeeded => Ok(PartnerAnswer {
                settled: true,
                reference: self.reference.clone(),
                partner_status: "APPROVED".into(),
                description: String::new(),
                instrument: (self.kind == OperationKind::Authorization)
                    .then(|| instrument_of(&self.reference)),
            }),
            EntryState::Pending { .. } => Ok(PartnerAnswer {
                settled: false,
                reference: self.reference.clone(),
                partner_status: "PENDING".into(),
                description: "accepted, the outcome follows".into(),
                instrument: None,
            }),
            EntryState::Declined(code) => Err(PartnerError::Declined {
                code: code.into(),
                description: "declined by the sandbox".into(),
            }),
        }
    }
}
