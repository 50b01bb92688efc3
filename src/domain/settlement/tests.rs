use super::*;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn entry(kind: EntryKind, amount: i64, vat: &[(&str, i64)]) -> SettlementEntry {
    SettlementEntry {
        kind,
        amount,
        currency: eur(),
        order_reference: "order-1".into(),
        partner_reference: "p-1".into(),
        action_reference: "op:0".into(),
        transaction_date: "2026-11-30".parse().unwrap(),
        vat: vat
            .iter()
            .map(|(rate, amount)| VatAmount {
                rate: rate.parse().unwrap(),
                amount: Amount::from_minor(*amount).unwrap(),
            })
            .collect(),
    }
}

#[test]
fn totals_net_captures_against_refunds_and_fees_and_sign_vat() {
    let mut totals = Totals::default();
    totals
        .add(&entry(
            EntryKind::Capture,
            12_500,
            &[("25", 2_000), ("12.0", 500)],
        ))
        .unwrap();
    totals
        .add(&entry(EntryKind::Refund, -2_500, &[("25.00", 500)]))
        .unwrap();
    totals.add(&entry(EntryKind::Fee, -50, &[])).unwrap();
    totals
        .add(&entry(EntryKind::Adjustment, -300, &[]))
        .unwrap();
    totals
        .add(&entry(EntryKind::Chargeback, -1_000, &[]))
        .unwrap();
    let totals = totals.with_fees(Amount::from_minor(100).unwrap()).unwrap();
    assert_eq!(
        (
            totals.captured,
            totals.refunded,
            totals.fees,
            totals.adjustments,
            totals.chargebacks
        ),
        (12_500, 2_500, 150, -300, 1_000)
    );
    assert_eq!(totals.net, 12_500 - 2_500 - 150 - 300 - 1_000);
    assert_eq!(totals.count, 5);
    let vat: Vec<(String, i64)> = totals
        .vat
        .iter()
        .map(|(rate, amount)| (rate.to_string(), *amount))
        .collect();
    assert_eq!(vat, [("12".to_owned(), 500), ("25".to_owned(), 1_500)]);
}

#[test]
fn a_line_matches_only_what_agrees_in_kind_amount_currency_and_outcome() {
    let line = entry(EntryKind::Capture, 1_000, &[]);
    let ours = |kind, amount, status| Ours {
        kind,
        amount: Amount::from_minor(amount).unwrap(),
        currency: eur(),
        status,
    };
    use OperationKind::{Capture, Refund};
    use TransactionStatus::{Failure, Success, Uncertain};
    assert_eq!(compare(&line, None), Match::UnknownToUs);
    for (kind, amount, status, matched) in [
        (Capture, 1_000, Success, Match::Matched),
        (Capture, 1_000, Uncertain, Match::Matched),
        (Capture, 999, Success, Match::AmountMismatch),
        (Refund, 1_000, Success, Match::KindMismatch),
        (Capture, 1_000, Failure, Match::AmountMismatch),
    ] {
        assert_eq!(
            compare(&line, Some(&ours(kind, amount, status))),
            matched,
            "{kind:?} of {amount}, {status:?}"
        );
    }
    // A negative purchase contradicts our capture whatever its amount;
    // a return is negative.
    let negative = entry(EntryKind::Capture, -1_000, &[]);
    assert_eq!(
        compare(&negative, Some(&ours(Capture, 1_000, Success))),
        Match::KindMismatch
    );
    let refund = entry(EntryKind::Refund, -1_000, &[]);
    assert_eq!(
        compare(&refund, Some(&ours(Refund, 1_000, Success))),
        Match::Matched
    );
    let positive_return = entry(EntryKind::Refund, 1_000, &[]);
    assert_eq!(
        compare(&positive_return, Some(&ours(Refund, 1_000, Success))),
        Match::KindMismatch
    );
}

#[test]
fn a_line_that_would_overflow_the_totals_changes_nothing() {
    let mut totals = Totals::default();
    totals
        .add(&entry(EntryKind::Capture, i64::MAX - 10, &[("25", 5)]))
        .unwrap();
    let before = totals.clone();
    for overflowing in [
        entry(EntryKind::Capture, 11, &[("25", 1)]),
        entry(EntryKind::Refund, i64::MIN, &[]),
        entry(EntryKind::Capture, 1, &[("25", i64::MAX)]),
    ] {
        assert!(totals.add(&overflowing).is_err(), "{overflowing:?}");
        assert_eq!(totals, before, "nothing of {overflowing:?} was added");
    }
    totals
        .add(&entry(EntryKind::Capture, 10, &[("6", 1)]))
        .unwrap();
    assert_eq!((totals.captured, totals.count), (i64::MAX, 2));
    assert_eq!(totals.vat.len(), 2);
}

#[test]
fn header_differences_name_each_figure_that_disagrees() {
    let mut read = LineSums::default();
    for (kind, amount) in [(EntryKind::Capture, 10_000), (EntryKind::Refund, -2_000)] {
        read.add(&entry(kind, amount, &[]));
        read.count_line();
    }
    read.count_line();
    let agrees = Control {
        captured: Some(10_000),
        refunded: Some(2_000),
        count: Some(3),
    };
    assert!(agrees.differences(&read).is_empty());
    assert!(Control::default().differences(&read).is_empty());
    let differs = Control {
        captured: Some(20_000),
        ..agrees
    };
    assert_eq!(differs.differences(&read).len(), 1);
}
