//! One shard: its records behind one lock, and how a step is checked
//! and applied to it (everything checked before anything is written).

use super::*;

/// How many expired records one sweep of a shard reclaims at most.
pub(super) const SWEEP_BATCH: usize = 10_000;

#[derive(Debug)]
pub(super) enum KeyRecordState {
    InFlight { lease_until: SystemTime },
    Done(KeptOutcome),
}

/// An answer as kept here. The operations it shows are shared with the
/// payment when they are the same value (a final operation never changes),
/// so an answer costs little more than its snapshot.
#[derive(Debug)]
pub(super) enum KeptOutcome {
    Other(Box<Outcome>),
    Payment {
        snapshot: Snapshot,
        operations: Vec<Arc<Operation>>,
    },
    Operation {
        snapshot: Snapshot,
        operation: Arc<Operation>,
    },
}

impl KeptOutcome {
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            KeptOutcome::Other(outcome) => (**outcome).clone(),
            KeptOutcome::Payment {
                snapshot,
                operations,
            } => Outcome::Payment {
                snapshot: snapshot.clone(),
                operations: operations.iter().map(|op| (**op).clone()).collect(),
            },
            KeptOutcome::Operation {
                snapshot,
                operation,
            } => Outcome::Operation {
                snapshot: snapshot.clone(),
                operation: (**operation).clone(),
            },
        }
    }
}

#[derive(Debug)]
pub(super) struct KeyRecord {
    pub(super) fingerprint: Fingerprint,
    pub(super) state: KeyRecordState,
    pub(super) expires_at: SystemTime,
}

#[derive(Debug)]
pub(super) struct PaymentRecord {
    pub(super) header: Versioned<Payment>,
    pub(super) operations: HashMap<Uuid, Arc<Operation>>,
}

#[derive(Debug)]
pub(super) struct SessionRecord {
    pub(super) session: Versioned<Session>,
    pub(super) expires_at: SystemTime,
}

/// Records that expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Expiring {
    Key(Uuid),
    Session(Uuid),
}

#[derive(Debug, Default)]
pub(super) struct ShardData {
    pub(super) sessions: HashMap<Uuid, SessionRecord>,
    pub(super) payments: HashMap<Uuid, PaymentRecord>,
    /// Operation id → its payment.
    pub(super) operations: HashMap<Uuid, Uuid>,
    pub(super) keys: HashMap<Uuid, KeyRecord>,
    /// When records may expire; an entry whose record was renewed since is
    /// checked again and dropped.
    pub(super) expiries: BTreeSet<(SystemTime, Expiring)>,
    pub(super) due: HashMap<DueItem, SystemTime>,
    /// Live send claims: (operation, leg) → (fence, until).
    pub(super) claims: HashMap<(Uuid, usize), (u32, SystemTime)>,
    /// Per lane ([`Lane::index`]).
    pub(super) due_order: [BTreeSet<(SystemTime, DueItem)>; 3],
    pub(super) outbox: HashMap<Uuid, WebhookDelivery>,
}

impl ShardData {
    pub(super) fn key(&self, record: Uuid, now: SystemTime) -> Option<&KeyRecord> {
        self.keys.get(&record).filter(|key| key.expires_at > now)
    }

    pub(super) fn session(&self, id: Uuid, now: SystemTime) -> Option<&Versioned<Session>> {
        self.sessions
            .get(&id)
            .filter(|record| record.expires_at > now)
            .map(|record| &record.session)
    }

    /// Every check of a step, before anything is written. `now` is the
    /// store's time (leases, claims and expiries are judged by it).
    pub(super) fn check(&self, step: &Step, now: SystemTime) -> Option<Committed> {
        if let Some(
            KeyChange::Claim {
                record,
                fingerprint,
                ..
            }
            | KeyChange::Answer {
                record,
                fingerprint,
                ..
            },
        ) = &step.key
            && let Some(existing) = self.key(*record, now)
        {
            let state = if existing.fingerprint != *fingerprint {
                KeyState::Mismatch
            } else {
                match &existing.state {
                    KeyRecordState::Done(kept) => KeyState::Done(Box::new(kept.outcome())),
                    KeyRecordState::InFlight { lease_until } => KeyState::InFlight {
                        lease_expired: *lease_until <= now,
                    },
                }
            };
            return Some(Committed::Claimed(state));
        }
        if let Some(write) = &step.session {
            let conflict = match write {
                Write::Insert(session) => {
                    if self.session(session.id, now).is_some() {
                        return Some(Committed::Exists);
                    }
                    false
                }
                Write::Update { expected, value } => {
                    self.session(value.id, now).map(|s| s.version) != Some(*expected)
                }
                Write::Check { expected, id } => {
                    self.session(*id, now).map(|s| s.version) != Some(*expected)
                }
            };
            if conflict {
                return Some(Committed::Conflict);
            }
        }
        if let Some(PaymentWrite { header, operations }) = &step.payment {
            let version = |id: &Uuid| self.payments.get(id).map(|p| p.header.version);
            let conflict = match header {
                Write::Insert(payment) => {
                    if self.payments.contains_key(&payment.id) {
                        return Some(Committed::Exists);
                    }
                    false
                }
                Write::Update { expected, value } => version(&value.id) != Some(*expected),
                Write::Check { expected, id } => version(id) != Some(*expected),
            };
            if conflict {
                return Some(Committed::Conflict);
            }
            let taken = operations.iter().any(|write| match write {
                OperationWrite::Insert(op) => self.operations.contains_key(&op.id),
                OperationWrite::Update(_) => false,
            });
            if taken {
                return Some(Committed::Exists);
            }
        }
        let busy = step.claims.iter().any(|change| match change {
            ClaimChange::Take { operation, leg, .. } => self
                .claims
                .get(&(*operation, *leg))
                .is_some_and(|(_, until)| *until > now),
            ClaimChange::Release { .. } => false,
        });
        if busy {
            return Some(Committed::Busy);
        }
        None
    }

    pub(super) fn apply(
        &mut self,
        step: Step,
        session_retention: Duration,
        now: SystemTime,
    ) -> Committed {
        let mut session_version = None;
        let written = match step.session {
            Some(Write::Insert(session)) => Some((session, 1)),
            Some(Write::Update { expected, value }) => Some((value, expected + 1)),
            Some(Write::Check { .. }) | None => None,
        };
        {
            if let Some((session, version)) = written {
                let expires_at = now + session_retention;
                self.expiries
                    .insert((expires_at, Expiring::Session(session.id)));
                session_version = Some(version);
                // The entry of the record replaced goes: one per session.
                if let Some(replaced) = self.sessions.get(&session.id)
                    && replaced.expires_at != expires_at
                {
                    let entry = (replaced.expires_at, Expiring::Session(session.id));
                    self.expiries.remove(&entry);
                }
                self.sessions.insert(
                    session.id,
                    SessionRecord {
                        session: Versioned {
                            value: session,
                            version,
                        },
                        expires_at,
                    },
                );
            }
        }
        let mut payment_version = None;
        if let Some(PaymentWrite { header, operations }) = step.payment {
            match header {
                Write::Insert(payment) => {
                    payment_version = Some(1);
                    self.payments.insert(
                        payment.id,
                        PaymentRecord {
                            header: Versioned {
                                value: payment,
                                version: 1,
                            },
                            operations: HashMap::new(),
                        },
                    );
                }
                Write::Update { expected, value } => {
                    if let Some(record) = self.payments.get_mut(&value.id) {
                        record.header = Versioned {
                            value,
                            version: expected + 1,
                        };
                        payment_version = Some(expected + 1);
                    }
                }
                Write::Check { .. } => {}
            }
            for write in operations {
                let op = match write {
                    OperationWrite::Insert(op) | OperationWrite::Update(op) => op,
                };
                self.operations.insert(op.id, op.payment_id);
                if let Some(record) = self.payments.get_mut(&op.payment_id) {
                    record.operations.insert(op.id, Arc::new(op));
                }
            }
        }
        for change in step.due {
            match change {
                DueChange::Schedule(item, at) => self.schedule(item, at),
                DueChange::Unschedule(item) => self.unschedule(&item),
            }
        }
        for change in step.outbox {
            match change {
                OutboxChange::Put(delivery) => {
                    self.outbox.entry(delivery.id).or_insert(delivery);
                }
                OutboxChange::Update(delivery) => {
                    self.outbox.insert(delivery.id, delivery);
                }
                OutboxChange::Delete(id) => {
                    self.outbox.remove(&id);
                }
            }
        }
        for change in step.claims {
            match change {
                ClaimChange::Take {
                    operation,
                    leg,
                    fence,
                    ttl,
                } => {
                    self.claims.insert((operation, leg), (fence, now + ttl));
                }
                ClaimChange::Release {
                    operation,
                    leg,
                    fence,
                } => {
                    if self.claims.get(&(operation, leg)).map(|c| c.0) == Some(fence) {
                        self.claims.remove(&(operation, leg));
                    }
                }
            }
        }
        let mut answered = None;
        match step.key {
            Some(KeyChange::Claim {
                record,
                fingerprint,
                lease,
                ttl,
            }) => self.put_key(
                record,
                fingerprint,
                KeyRecordState::InFlight {
                    lease_until: now + lease,
                },
                now + ttl,
            ),
            Some(KeyChange::Answer {
                record,
                fingerprint,
                outcome,
                ttl,
            }) => self.put_key(
                record,
                fingerprint,
                KeyRecordState::Done(self.keep(outcome)),
                now + ttl,
            ),
            Some(KeyChange::Abandon { record }) => {
                if let Some(existing) = self.keys.get_mut(&record).filter(|k| k.expires_at > now)
                    && let KeyRecordState::InFlight { lease_until } = &mut existing.state
                {
                    *lease_until = now;
                }
            }
            Some(KeyChange::Complete { record, outcome }) => {
                let kept = self.keep(outcome);
                if let Some(existing) = self.keys.get_mut(&record).filter(|k| k.expires_at > now) {
                    match &existing.state {
                        KeyRecordState::InFlight { .. } => {
                            existing.state = KeyRecordState::Done(kept);
                        }
                        KeyRecordState::Done(first) => answered = Some(Box::new(first.outcome())),
                    }
                }
            }
            None => {}
        }
        Committed::Applied {
            payment: payment_version,
            session: session_version,
            answered,
        }
    }

    /// An answer to keep, sharing the operations it shows with the payment
    /// when they are the same.
    pub(super) fn keep(&self, outcome: Outcome) -> KeptOutcome {
        let share = |op: Operation| -> Arc<Operation> {
            self.payments
                .get(&op.payment_id)
                .and_then(|record| record.operations.get(&op.id))
                .filter(|stored| ***stored == op)
                .cloned()
                .unwrap_or_else(|| Arc::new(op))
        };
        match outcome {
            Outcome::Operation {
                snapshot,
                operation,
            } => KeptOutcome::Operation {
                snapshot,
                operation: share(operation),
            },
            Outcome::Payment {
                snapshot,
                operations,
            } => KeptOutcome::Payment {
                snapshot,
                operations: operations.into_iter().map(share).collect(),
            },
            other => KeptOutcome::Other(Box::new(other)),
        }
    }

    pub(super) fn put_key(
        &mut self,
        record: Uuid,
        fingerprint: Fingerprint,
        state: KeyRecordState,
        expires_at: SystemTime,
    ) {
        self.expiries.insert((expires_at, Expiring::Key(record)));
        self.keys.insert(
            record,
            KeyRecord {
                fingerprint,
                state,
                expires_at,
            },
        );
    }

    pub(super) fn schedule(&mut self, item: DueItem, at: SystemTime) {
        let lane = item.lane().index();
        if let Some(previous) = self.due.insert(item.clone(), at) {
            self.due_order[lane].remove(&(previous, item.clone()));
        }
        self.due_order[lane].insert((at, item));
    }

    pub(super) fn unschedule(&mut self, item: &DueItem) {
        if let Some(previous) = self.due.remove(item) {
            self.due_order[item.lane().index()].remove(&(previous, item.clone()));
        }
    }

    /// Reclaims records whose time is up.
    pub(super) fn sweep(&mut self, now: SystemTime) {
        // Claims live only while a partner call is on its way: few.
        self.claims.retain(|_, (_, until)| *until > now);
        for _ in 0..SWEEP_BATCH {
            let Some(&(at, what)) = self.expiries.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.expiries.pop_first();
            match what {
                Expiring::Key(id) => {
                    if self.keys.get(&id).is_some_and(|k| k.expires_at <= now) {
                        self.keys.remove(&id);
                    }
                }
                Expiring::Session(id) => {
                    if self.sessions.get(&id).is_some_and(|s| s.expires_at <= now) {
                        self.sessions.remove(&id);
                    }
                }
            }
        }
    }

    pub(super) fn stored_payment(&self, id: Uuid) -> Option<StoredPayment> {
        let record = self.payments.get(&id)?;
        let mut operations: Vec<Operation> = record
            .operations
            .values()
            .map(|op| (**op).clone())
            .collect();
        operations.sort_by_key(|op| op.sequence);
        Some(StoredPayment {
            header: record.header.clone(),
            operations,
        })
    }
}
