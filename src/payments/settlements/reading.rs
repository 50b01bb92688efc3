//! Serving imported settlements and issues: a merchant sees only what is
//! its own, an operator everything.

use uuid::Uuid;

use super::Viewer;
use crate::{
    domain::settlement::{ReconciliationIssue, Settlement, SettlementTransaction},
    payments::{PaymentError, Payments},
    store::{IssueQuery, SettlementQuery},
};

impl Viewer<'_> {
    fn merchant(self) -> Option<String> {
        match self {
            Viewer::Merchant(merchant) => Some(merchant.to_owned()),
            Viewer::Operator => None,
        }
    }

    pub(super) fn sees(self, owner: Option<&String>) -> bool {
        match self {
            Viewer::Merchant(merchant) => owner.is_some_and(|m| m == merchant),
            Viewer::Operator => true,
        }
    }
}

impl Payments {
    /// Settlements the viewer may see.
    pub async fn list_settlements(
        &self,
        viewer: Viewer<'_>,
        mut query: SettlementQuery,
    ) -> Result<Vec<(String, Settlement)>, PaymentError> {
        query.merchant = viewer.merchant();
        Ok(self.store.list_settlements(&query).await?)
    }

    /// A settlement, if the viewer may see it.
    pub async fn settlement(
        &self,
        viewer: Viewer<'_>,
        id: Uuid,
    ) -> Result<Settlement, PaymentError> {
        self.store
            .settlement(id)
            .await?
            .filter(|s| viewer.sees(s.merchant.as_ref()))
            .ok_or(PaymentError::NotFound)
    }

    /// Lines `offset..offset + limit` of a settlement the viewer may see.
    pub async fn settlement_lines(
        &self,
        viewer: Viewer<'_>,
        id: Uuid,
        offset: u64,
        limit: usize,
    ) -> Result<(Settlement, Vec<SettlementTransaction>), PaymentError> {
        let settlement = self.settlement(viewer, id).await?;
        let lines = self.store.settlement_lines(id, offset, limit).await?;
        Ok((settlement, lines))
    }

    /// Reconciliation issues the viewer may see.
    pub async fn reconciliation_issues(
        &self,
        viewer: Viewer<'_>,
        mut query: IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, PaymentError> {
        query.merchant = viewer.merchant();
        Ok(self.store.list_issues(&query).await?)
    }
}
