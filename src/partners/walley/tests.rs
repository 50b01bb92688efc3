use super::*;

#[test]
fn every_documented_status_has_its_meaning() {
    let class = |status: u16| match classify(StatusCode::from_u16(status).unwrap(), b"{}") {
        Ok(Posted::Done) => "done",
        Ok(Posted::Accepted) => "pending",
        Err(PartnerError::Declined { .. }) => "declined",
        Err(PartnerError::Unavailable { .. }) => "unavailable",
        Err(PartnerError::Unknown { .. }) => "unknown",
        Err(PartnerError::Contradiction { .. }) => "contradiction",
    };
    for (status, expected) in [
        (200, "done"),
        (201, "done"),
        (202, "pending"),
        (409, "pending"),
        (400, "declined"),
        (422, "declined"),
        (401, "unavailable"),
        (403, "unavailable"),
        (404, "unavailable"),
        (429, "unavailable"),
        (503, "unavailable"),
        (500, "unknown"),
        (502, "unknown"),
        (504, "unknown"),
    ] {
        assert_eq!(class(status), expected, "HTTP {status}");
    }
}

#[test]
fn ids_are_escaped_in_paths() {
    assert_eq!(path_segment("abc-123"), "abc-123");
    assert_eq!(path_segment("../x"), "..%2Fx");
}

#[test]
fn a_path_template_holds_the_order_id_once_and_fills_it_escaped() {
    let documented = Paths::default();
    assert_eq!(
        Paths::fill(&documented.capture, "o/1"),
        "/orders/o%2F1/captures"
    );
    for good in ["/manage/orders/{id}/capture", "/orders/{id}/refunds"] {
        assert_eq!(Paths::check(good), Ok(()), "{good}");
    }
    for bad in ["orders/{id}", "/orders/captures", "/orders/{id}/{id}", ""] {
        assert!(Paths::check(bad).is_err(), "{bad}");
    }
}
