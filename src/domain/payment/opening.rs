//! Opening an operation on a payment: routing its amount across the legs,
//! booking the reservations, and the compensation that gives back what a
//! failed authorization left held.

use super::*;

impl Payment {
    /// Routes the request across the legs and returns the operation with its
    /// reservations booked (transactions not yet sent). Changes nothing on
    /// error.
    pub fn open_operation(
        &mut self,
        id: Uuid,
        request: &OperationRequest,
        now: SystemTime,
    ) -> Result<Operation, OperationError> {
        if self.authorization_status != OperationStatus::Success {
            return Err(OperationError::NotAuthorized);
        }
        if let Some(max) = request.max_operations
            && self.operations >= max
        {
            return Err(OperationError::TooManyOperations { max });
        }
        let ranked = priority::order(
            &request.priority,
            self.legs
                .iter()
                .map(|leg| (leg.partner.as_str(), leg.method.as_str())),
        );
        let avoided = |leg: &usize| request.avoid.contains(&self.legs[*leg].partner);
        let demote = request.kind != OperationKind::Refund && ranked.iter().any(avoided);
        let route: Vec<usize> = if demote {
            // Stable: the healthy legs in their order, then the others.
            let (healthy, sick): (Vec<usize>, Vec<usize>) =
                ranked.iter().partition(|leg| !avoided(leg));
            healthy.into_iter().chain(sick).collect()
        } else {
            ranked
        };
        let limits = self.limits(request.kind);
        let allocations = routing::allocate(
            &route,
            &self.available(request.kind),
            &limits,
            request.amount,
        )
        .map_err(|error| match error {
            AllocationError::ExceedsAvailable {
                requested,
                available,
            } => OperationError::ExceedsAvailable {
                requested,
                available,
            },
            AllocationError::NothingAvailable => OperationError::NothingAvailable,
            AllocationError::NotRoutable { leg, because } => OperationError::NotRoutable {
                partner: self.legs[leg].partner.clone(),
                because,
            },
        })?;
        let amount = Amount::sum(allocations.iter().map(|a| a.amount))
            .map_err(|_| OperationError::NothingAvailable)?;
        let why = self.why_these_legs(request, &allocations);
        let mut operation = self.operation(id, request, amount, route, &allocations, now);
        operation.note(why, now);
        let partner_of = |leg: usize| {
            self.legs
                .get(leg)
                .map(|l| l.partner.clone())
                .unwrap_or_default()
        };
        if let Some(lines) = operation.lines_note(partner_of) {
            operation.note(lines, now);
        }
        Ok(operation)
    }

    /// The rule that ordered an operation's legs, and what an open circuit
    /// changed: the first entry of its history.
    pub(super) fn why_these_legs(
        &self,
        request: &OperationRequest,
        allocations: &[Allocation],
    ) -> String {
        // What each leg takes is on the operation's transactions.
        let rules: Vec<String> = request.priority.iter().map(ToString::to_string).collect();
        let mut why = format!(
            "legs ordered by {} [{}]",
            request.order_source,
            rules.join(", ")
        );
        let mut open: Vec<&str> = Vec::new();
        for leg in &self.legs {
            let partner = leg.partner.as_str();
            if request.avoid.iter().any(|p| p == partner) && !open.contains(&partner) {
                open.push(partner);
            }
        }
        for partner in open {
            let used: Vec<String> = allocations
                .iter()
                .filter(|a| self.legs[a.leg].partner == partner)
                .map(|a| a.leg.to_string())
                .collect();
            let effect = match (request.kind, used.is_empty()) {
                (OperationKind::Refund, _) => {
                    "a refund keeps its order: money goes back where it came from"
                }
                (_, true) => "its legs went last, and the others covered the amount",
                (_, false) => "its legs went last, but the others could not cover the amount",
            };
            why.push_str(&format!("; {partner}'s circuit is open: {effect}"));
        }
        why
    }

    /// After a failed authorization, a SYSTEM void of what the legs that were
    /// authorized still hold (compensation); `None` when nothing is held.
    pub fn open_compensation(&mut self, id: Uuid, now: SystemTime) -> Option<Operation> {
        if self.authorization_status != OperationStatus::Failure {
            return None;
        }
        let allocations: Vec<Allocation> = self
            .ledger
            .iter()
            .enumerate()
            .map(|(leg, held)| Allocation {
                leg,
                amount: held.available_to_void(),
            })
            .filter(|a| !a.amount.is_zero())
            .collect();
        if allocations.is_empty() {
            return None;
        }
        let request = OperationRequest {
            kind: OperationKind::Void,
            amount: None,
            priority: Vec::new(),
            fallback: false,
            merchant_reference: String::new(),
            reason: "authorization failed: releasing the legs that were authorized".into(),
            triggered_by: TriggeredBy::System,
            origin: None,
            items: Vec::new(),
            order_source: OrderSource::System,
            avoid: Vec::new(),
            max_operations: None,
        };
        let amount = Amount::sum(allocations.iter().map(|a| a.amount)).ok()?;
        let route = allocations.iter().map(|a| a.leg).collect();
        Some(self.operation(id, &request, amount, route, &allocations, now))
    }

    /// A new operation over `allocations`, booked into the ledger.
    pub(super) fn operation(
        &mut self,
        id: Uuid,
        request: &OperationRequest,
        amount: Amount,
        route: Vec<usize>,
        allocations: &[Allocation],
        now: SystemTime,
    ) -> Operation {
        let operation = Operation {
            id,
            payment_id: self.id,
            sequence: self.operations,
            kind: request.kind,
            amount,
            status: OperationStatus::Uncertain,
            merchant_reference: request.merchant_reference.clone(),
            reason: request.reason.clone(),
            triggered_by: request.triggered_by,
            route,
            fallback: request.fallback,
            transactions: allocations
                .iter()
                .map(|a| PartnerTransaction::unsent(id, a.leg, a.amount, now))
                .collect(),
            requires_review: false,
            origin: request.origin,
            items: request.items.clone(),
            history: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        self.operations = self.operations.saturating_add(1);
        for (leg, held) in self
            .ledger
            .iter_mut()
            .zip(operation.contribution(self.legs.len()))
        {
            *leg = leg.plus(&held);
        }
        self.updated_at = now;
        operation
    }
}
