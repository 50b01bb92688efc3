//! Imported settlements, their lines, reconciliation issues, settled
//! markers and leases.

use super::*;

/// Settlements, their lines and issues, each with when it expires.
#[derive(Debug, Default)]
pub(super) struct Settlements {
    pub(super) settlements: HashMap<Uuid, (Settlement, SystemTime)>,
    pub(super) lines: HashMap<Uuid, (BTreeMap<u64, SettlementTransaction>, SystemTime)>,
    pub(super) index: BTreeSet<String>,
    pub(super) issues: HashMap<Uuid, (ReconciliationIssue, SystemTime)>,
    pub(super) issue_index: BTreeSet<String>,
    pub(super) leases: HashMap<String, (Uuid, SystemTime)>,
    /// Partner transaction → the line that settled it.
    pub(super) settled: HashMap<Uuid, (SettledBy, SystemTime)>,
    /// Partner → its failed settlements by reference (kept until read).
    pub(super) failed: HashMap<String, BTreeMap<String, FailedSettlement>>,
}

impl Settlements {
    /// Drops what expired (with every write: settlements are few).
    pub(super) fn sweep(&mut self, now: SystemTime) {
        let Settlements {
            settlements,
            lines,
            index,
            issues,
            issue_index,
            settled,
            ..
        } = self;
        settlements.retain(|_, (settlement, until)| {
            let keep = *until > now;
            if !keep {
                index.remove(&settlement_member(settlement));
            }
            keep
        });
        lines.retain(|_, (_, until)| *until > now);
        settled.retain(|_, (_, until)| *until > now);
        issues.retain(|_, (issue, until)| {
            let keep = *until > now;
            if !keep {
                issue_index.remove(&issue_member(issue));
            }
            keep
        });
    }
}

/// Members of an index after `low`, in order.
pub(super) fn members_from<'a>(
    index: &'a BTreeSet<String>,
    low: &Bound<String>,
) -> impl Iterator<Item = &'a String> {
    index.range::<String, _>((low.as_ref(), Bound::Unbounded))
}

/// What `kept` holds under `id`, unless its retention ran out by `now`.
fn live<T: Clone>(kept: &HashMap<Uuid, (T, SystemTime)>, id: Uuid, now: SystemTime) -> Option<T> {
    let found = kept.get(&id).filter(|(_, until)| *until > now);
    found.map(|(value, _)| value.clone())
}

#[async_trait]
impl SettlementStore for MemoryStore {
    async fn settlement(&self, id: Uuid) -> Result<Option<Settlement>, StoreError> {
        Ok(live(
            &lock(&self.settlements).settlements,
            id,
            self.clock.now(),
        ))
    }

    async fn put_settlement_lines(
        &self,
        settlement: Uuid,
        lines: &[SettlementTransaction],
        retain_until: SystemTime,
    ) -> Result<(), StoreError> {
        let mut data = lock(&self.settlements);
        let (stored, until) = data
            .lines
            .entry(settlement)
            .or_insert_with(|| (BTreeMap::new(), retain_until));
        *until = retain_until;
        for line in lines {
            stored.insert(line.index, line.clone());
        }
        Ok(())
    }

    async fn finish_settlement(
        &self,
        settlement: &Settlement,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut data = lock(&self.settlements);
        data.sweep(self.clock.now());
        if data.settlements.contains_key(&settlement.id) {
            return Ok(false);
        }
        data.index.insert(settlement_member(settlement));
        data.settlements
            .insert(settlement.id, (settlement.clone(), retain_until));
        Ok(true)
    }

    async fn settlement_lines(
        &self,
        settlement: Uuid,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<SettlementTransaction>, StoreError> {
        let now = self.clock.now();
        let data = lock(&self.settlements);
        Ok(data
            .lines
            .get(&settlement)
            .filter(|(_, until)| *until > now)
            .map(|(lines, _)| {
                lines
                    .range(offset..)
                    .take(limit)
                    .map(|(_, l)| l.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list_settlements(
        &self,
        query: &SettlementQuery,
    ) -> Result<Vec<(String, Settlement)>, StoreError> {
        let now = self.clock.now();
        let data = lock(&self.settlements);
        Ok(members_from(&data.index, &query.low())
            .filter_map(|member| {
                let id = member_id(member)?;
                let (settlement, until) = data.settlements.get(&id)?;
                (*until > now).then(|| (member.clone(), settlement.clone()))
            })
            .take_while(|(_, s)| query.to.is_none_or(|to| s.date <= to))
            .filter(|(_, s)| query.admits(s))
            .take(query.limit)
            .collect())
    }

    async fn record_issue(
        &self,
        issue: &ReconciliationIssue,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut data = lock(&self.settlements);
        if data.issues.contains_key(&issue.id) {
            return Ok(false);
        }
        data.issue_index.insert(issue_member(issue));
        data.issues.insert(issue.id, (issue.clone(), retain_until));
        Ok(true)
    }

    async fn list_issues(
        &self,
        query: &IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, StoreError> {
        let now = self.clock.now();
        let data = lock(&self.settlements);
        Ok(members_from(&data.issue_index, &query.low())
            .filter_map(|member| {
                let id = member_id(member)?;
                let (issue, until) = data.issues.get(&id)?;
                (*until > now).then(|| (member.clone(), issue.clone()))
            })
            .take_while(|(_, i)| query.created_before.is_none_or(|t| i.created_at < t))
            .filter(|(_, i)| query.admits(i))
            .take(query.limit)
            .collect())
    }

    async fn issue(&self, id: Uuid) -> Result<Option<ReconciliationIssue>, StoreError> {
        Ok(live(&lock(&self.settlements).issues, id, self.clock.now()))
    }

    async fn resolve_issue(
        &self,
        id: Uuid,
        resolution: &str,
        at: SystemTime,
    ) -> Result<Option<ReconciliationIssue>, StoreError> {
        let now = self.clock.now();
        let mut data = lock(&self.settlements);
        let Some((issue, _)) = data.issues.get_mut(&id).filter(|(_, until)| *until > now) else {
            return Ok(None);
        };
        if issue.is_open() {
            issue.resolved_at = Some(at);
            resolution.clone_into(&mut issue.resolution);
        }
        Ok(Some(issue.clone()))
    }

    async fn claim_settled(
        &self,
        claims: &[(Uuid, SettledBy)],
        retain_until: SystemTime,
    ) -> Result<Vec<SettledBy>, StoreError> {
        let now = self.clock.now();
        let mut data = lock(&self.settlements);
        Ok(claims
            .iter()
            .map(|(transaction, claim)| {
                let held = data
                    .settled
                    .entry(*transaction)
                    .or_insert((*claim, retain_until));
                if held.1 <= now {
                    *held = (*claim, retain_until);
                }
                held.0
            })
            .collect())
    }

    async fn replace_settled(
        &self,
        transaction: Uuid,
        held: SettledBy,
        claim: SettledBy,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut data = lock(&self.settlements);
        match data.settled.get_mut(&transaction) {
            Some(current) if current.0 == held && current.1 > now => {
                *current = (claim, retain_until);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn settled_in(&self, transaction: Uuid) -> Result<Option<SettledBy>, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.settlements)
            .settled
            .get(&transaction)
            .filter(|(_, until)| *until > now)
            .map(|(settled, _)| *settled))
    }

    async fn failed_settlements(&self, partner: &str) -> Result<Vec<FailedSettlement>, StoreError> {
        let data = lock(&self.settlements);
        let mut failed: Vec<FailedSettlement> = data
            .failed
            .get(partner)
            .map(|failed| failed.values().cloned().collect())
            .unwrap_or_default();
        failed.sort_by(FailedSettlement::oldest_first);
        Ok(failed)
    }

    async fn put_failed_settlement(
        &self,
        partner: &str,
        failed: &FailedSettlement,
    ) -> Result<(), StoreError> {
        lock(&self.settlements)
            .failed
            .entry(partner.to_owned())
            .or_default()
            .insert(failed.report.reference.clone(), failed.clone());
        Ok(())
    }

    async fn clear_failed_settlement(
        &self,
        partner: &str,
        reference: &str,
    ) -> Result<(), StoreError> {
        if let Some(failed) = lock(&self.settlements).failed.get_mut(partner) {
            failed.remove(reference);
        }
        Ok(())
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: Uuid,
        _now: SystemTime,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // Judged by the store's clock, like Redis's PX.
        let now = self.clock.now();
        let mut data = lock(&self.settlements);
        let free = data
            .leases
            .get(name)
            .is_none_or(|(holder, until)| *holder == owner || *until <= now);
        if free {
            data.leases.insert(name.to_owned(), (owner, now + lease));
        }
        Ok(free)
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        let mut data = lock(&self.settlements);
        if data
            .leases
            .get(name)
            .is_some_and(|(holder, _)| *holder == owner)
        {
            data.leases.remove(name);
        }
        Ok(())
    }
}
