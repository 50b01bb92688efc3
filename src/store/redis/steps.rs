//! The one write: a [`Step`] as one Lua script (the lean OPEN and
//! CONCLUDE for the two shapes every operation takes, STEP for any other),
//! and what its answer means.

use super::*;

/// The keys and arguments of a step, in the order `STEP` reads them.
pub(super) fn step_invocation(
    step: &Step,
    session_retention: Duration,
    sharded: bool,
) -> Result<redis::ScriptInvocation<'static>, StoreError> {
    let shard = step.shard;
    let mut invocation = STEP.prepare_invoke();
    let placeholder = || in_shard(shard, "-");
    invocation.key(
        step.key
            .as_ref()
            .map_or_else(placeholder, |k| record_key(k.record())),
    );
    let session_id = step.session.as_ref().map(|write| match write {
        Write::Insert(session) | Write::Update { value: session, .. } => session.id,
        Write::Check { id, .. } => *id,
    });
    invocation.key(session_id.map_or_else(placeholder, session_key));
    let payment_id = step.payment.as_ref().map(|write| match &write.header {
        Write::Insert(payment) | Write::Update { value: payment, .. } => payment.id,
        Write::Check { id, .. } => *id,
    });
    invocation.key(payment_id.map_or_else(placeholder, payment_key));
    invocation.key(operation_index_key(shard));
    for lane in Lane::ALL {
        invocation.key(lane_key(shard, lane));
    }
    for change in &step.outbox {
        let id = match change {
            OutboxChange::Put(delivery) | OutboxChange::Update(delivery) => delivery.id,
            OutboxChange::Delete(id) => *id,
        };
        invocation.key(delivery_key(id));
    }
    for change in &step.claims {
        let (operation, leg) = change.leg();
        invocation.key(claim_key(operation, leg));
    }

    invocation.arg(unix_millis(step.now));
    match &step.key {
        None => invocation.arg("").arg("").arg("").arg("").arg(""),
        Some(KeyChange::Claim {
            fingerprint,
            lease,
            ttl,
            ..
        }) => invocation
            .arg("claim")
            .arg(fingerprint.0.as_slice())
            .arg(ttl_millis(*lease))
            .arg(ttl_millis(*ttl))
            .arg(""),
        Some(KeyChange::Answer {
            fingerprint,
            outcome,
            ttl,
            ..
        }) => invocation
            .arg("answer")
            .arg(fingerprint.0.as_slice())
            .arg("")
            .arg(ttl_millis(*ttl))
            .arg(codec::encode_outcome(outcome)?),
        Some(KeyChange::Abandon { .. }) => {
            invocation.arg("abandon").arg("").arg("").arg("").arg("")
        }
        Some(KeyChange::Complete { outcome, .. }) => invocation
            .arg("complete")
            .arg("")
            .arg("")
            .arg("")
            .arg(codec::encode_outcome(outcome)?),
    };
    match &step.session {
        None => invocation.arg("").arg("").arg(""),
        Some(Write::Insert(session)) => invocation
            .arg("insert")
            .arg("")
            .arg(codec::encode(session)?),
        Some(Write::Update { expected, value }) => invocation
            .arg("update")
            .arg(*expected)
            .arg(codec::encode(value)?),
        Some(Write::Check { expected, .. }) => invocation.arg("check").arg(*expected).arg(""),
    };
    invocation.arg(ttl_millis(session_retention));
    let (mode, expected, header) = match step.payment.as_ref().map(|p| &p.header) {
        None => ("", None, None),
        Some(Write::Insert(payment)) => ("insert", None, Some(codec::encode(payment)?)),
        Some(Write::Update { expected, value }) => {
            ("update", Some(*expected), Some(codec::encode(value)?))
        }
        Some(Write::Check { expected, .. }) => ("check", Some(*expected), None),
    };
    invocation
        .arg(mode)
        .arg(expected.map(|v| v.to_string()).unwrap_or_default())
        .arg(header.unwrap_or_default())
        .arg(payment_id.map_or_else(Vec::new, |id| id.as_bytes().to_vec()))
        .arg(next_version(expected));
    let operations = step.payment.as_ref().map_or(&[][..], |p| &p.operations[..]);
    invocation.arg(operations.len());
    for write in operations {
        let (mode, op) = match write {
            OperationWrite::Insert(op) => ("i", op),
            OperationWrite::Update(op) => ("u", op),
        };
        invocation
            .arg(op.id.to_string())
            .arg(mode)
            .arg(codec::encode(op)?)
            .arg(op.id.as_bytes().as_slice());
    }
    invocation.arg(step.due.len());
    for change in &step.due {
        match change {
            DueChange::Schedule(item, at) => {
                invocation.arg("+").arg(item.encode()).arg(unix_millis(*at))
            }
            DueChange::Unschedule(item) => invocation.arg("-").arg(item.encode()).arg(""),
        };
    }
    invocation.arg(step.outbox.len());
    for change in &step.outbox {
        match change {
            OutboxChange::Put(delivery) => invocation.arg("p").arg(codec::encode(delivery)?),
            OutboxChange::Update(delivery) => invocation.arg("u").arg(codec::encode(delivery)?),
            OutboxChange::Delete(_) => invocation.arg("d").arg(""),
        };
    }
    invocation.arg(announced(step, sharded));
    invocation.arg(step.claims.len());
    claim_args(&mut invocation, &step.claims);
    Ok(invocation)
}

/// `(t|r, fence, ttl ms)` per claim change, in the order of their keys.
pub(super) fn claim_args(
    invocation: &mut redis::ScriptInvocation<'static>,
    claims: &[ClaimChange],
) {
    for change in claims {
        match change {
            ClaimChange::Take { fence, ttl, .. } => {
                invocation.arg("t").arg(*fence).arg(ttl_millis(*ttl))
            }
            ClaimChange::Release { fence, .. } => invocation.arg("r").arg(*fence).arg(""),
        };
    }
}

/// The `announce` argument of a step script: the operation id (`s` first
/// for the shard's channel: `sharded`), or empty.
pub(super) fn announced(step: &Step, sharded: bool) -> String {
    match (step.announce, sharded) {
        (Some(id), true) => format!("s{id}"),
        (Some(id), false) => id.to_string(),
        (None, _) => String::new(),
    }
}

/// The hot shapes of a step get a lean script: opening an operation
/// (claim, header compare-and-set, one new operation, its due entry) and
/// writing one (header compare-and-set, the operation, maybe the answer,
/// due-queue moves). `None`: any other shape, for [`STEP`].
pub(super) fn lean_invocation(
    step: &Step,
    sharded: bool,
) -> Result<Option<redis::ScriptInvocation<'static>>, StoreError> {
    let resolution_only = step.due.iter().all(|change| match change {
        DueChange::Schedule(item, _) | DueChange::Unschedule(item) => {
            item.lane() == Lane::Resolution
        }
    });
    if step.session.is_some() || !step.outbox.is_empty() || !resolution_only {
        return Ok(None);
    }
    let opens = matches!(step.key, Some(KeyChange::Claim { .. }));
    if opens && step.announce.is_some() {
        return Ok(None);
    }
    let Some(PaymentWrite {
        header: Write::Update { expected, value },
        operations,
    }) = &step.payment
    else {
        return Ok(None);
    };
    let shard = step.shard;
    match (&step.key, operations.as_slice(), step.due.as_slice()) {
        (
            Some(KeyChange::Claim {
                record,
                fingerprint,
                lease,
                ttl,
            }),
            [OperationWrite::Insert(op)],
            [DueChange::Schedule(item, at)],
        ) => {
            let first = match step.claims.as_slice() {
                [] => None,
                [
                    ClaimChange::Take {
                        operation,
                        leg,
                        fence,
                        ttl,
                    },
                ] if *operation == op.id => Some((*leg, *fence, *ttl)),
                _ => return Ok(None),
            };
            let mut invocation = OPEN.prepare_invoke();
            invocation
                .key(record_key(*record))
                .key(payment_key(value.id))
                .key(operation_index_key(shard))
                .key(due_key(shard))
                .key(first.map_or_else(|| in_shard(shard, "-"), |(leg, ..)| claim_key(op.id, leg)))
                .arg(fingerprint.0.as_slice())
                .arg(ttl_millis(*lease))
                .arg(ttl_millis(*ttl))
                .arg(*expected)
                .arg(codec::encode(value)?)
                .arg(op.id.to_string())
                .arg(codec::encode(op)?)
                .arg(value.id.as_bytes().as_slice())
                .arg(item.encode())
                .arg(unix_millis(*at))
                .arg(op.id.as_bytes().as_slice())
                .arg(next_version(Some(*expected)))
                .arg(
                    first
                        .map(|(_, fence, _)| fence.to_string())
                        .unwrap_or_default(),
                )
                .arg(first.map(|(.., ttl)| ttl_millis(ttl)).unwrap_or_default());
            Ok(Some(invocation))
        }
        (None | Some(KeyChange::Complete { .. }), [OperationWrite::Update(op)], due) => {
            let mut invocation = CONCLUDE.prepare_invoke();
            let (record, outcome) = match &step.key {
                Some(KeyChange::Complete { record, outcome }) => {
                    (record_key(*record), codec::encode_outcome(outcome)?)
                }
                _ => (in_shard(shard, "-"), Vec::new()),
            };
            invocation
                .key(record)
                .key(payment_key(value.id))
                .key(due_key(shard));
            for change in &step.claims {
                let (operation, leg) = change.leg();
                invocation.key(claim_key(operation, leg));
            }
            invocation
                .arg(*expected)
                .arg(codec::encode(value)?)
                .arg(op.id.to_string())
                .arg(codec::encode(op)?)
                .arg(outcome)
                .arg(next_version(Some(*expected)))
                .arg(announced(step, sharded))
                .arg(due.len());
            for change in due {
                match change {
                    DueChange::Schedule(item, at) => {
                        invocation.arg("+").arg(item.encode()).arg(unix_millis(*at))
                    }
                    DueChange::Unschedule(item) => invocation.arg("-").arg(item.encode()).arg(""),
                };
            }
            claim_args(&mut invocation, &step.claims);
            Ok(Some(invocation))
        }
        _ => Ok(None),
    }
}

/// A payment header's next version after `expected` (`None`: a new
/// payment): a count in the high 32 bits, a random tag in the low 32.
/// Versions still grow, and one is not written twice with other content:
/// a write lost to a failover leaves its version unused, and the next
/// writer's differs in its tag, so a replica that holds the lost header
/// (`payments::headers`) cannot pass the compare-and-set against what was
/// written since (but with a chance of 2⁻³² per lost write).
pub(super) fn next_version(expected: Option<u64>) -> u64 {
    let count = expected.map_or(0, |version| version >> 32) + 1;
    (count << 32) | u64::from(rand::random::<u32>())
}

/// A step script's answer, before stored answers are read back.
pub(super) enum Answer {
    Applied {
        payment: Option<u64>,
        session: Option<u64>,
        answered: Option<Vec<u8>>,
    },
    Conflict,
    Exists,
    Busy,
    Mismatch,
    Done(Vec<u8>),
    InFlight {
        lease_expired: bool,
    },
}

pub(super) fn answer(values: &[Value]) -> Result<Answer, StoreError> {
    let tag = values
        .first()
        .and_then(bytes)
        .ok_or_else(|| corrupt("an empty step answer"))?;
    Ok(match tag {
        b"ok" => Answer::Applied {
            payment: values.get(1).and_then(number),
            session: values.get(2).and_then(number),
            answered: match values.get(3) {
                Some(Value::BulkString(outcome)) => Some(outcome.clone()),
                _ => None,
            },
        },
        b"conflict" => Answer::Conflict,
        b"exists" => Answer::Exists,
        b"busy" => Answer::Busy,
        b"mismatch" => Answer::Mismatch,
        b"done" => Answer::Done(
            values
                .get(1)
                .and_then(bytes)
                .ok_or_else(|| corrupt("a done key without outcome"))?
                .to_vec(),
        ),
        b"inflight" => Answer::InFlight {
            lease_expired: false,
        },
        b"expired" => Answer::InFlight {
            lease_expired: true,
        },
        _ => return Err(corrupt("an unknown step answer")),
    })
}

impl RedisStore {
    /// What a step script answered, with stored answers read back.
    pub(super) async fn committed(&self, values: &[Value]) -> Result<Committed, StoreError> {
        Ok(match answer(values)? {
            Answer::Applied {
                payment,
                session,
                answered,
            } => Committed::Applied {
                payment,
                session,
                answered: match answered {
                    Some(bytes) => Some(Box::new(self.outcome(&bytes).await?)),
                    None => None,
                },
            },
            Answer::Conflict => Committed::Conflict,
            Answer::Exists => Committed::Exists,
            Answer::Busy => Committed::Busy,
            Answer::Mismatch => Committed::Claimed(KeyState::Mismatch),
            Answer::Done(bytes) => {
                Committed::Claimed(KeyState::Done(Box::new(self.outcome(&bytes).await?)))
            }
            Answer::InFlight { lease_expired } => {
                Committed::Claimed(KeyState::InFlight { lease_expired })
            }
        })
    }
}
