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

#[test]
fn an_order_guid_is_one_instrument_in_any_case_or_form() {
    let walley = Walley::new(Settings {
        base_url: "http://127.0.0.1:9".into(),
        client_id: "client".into(),
        client_secret: Secret::new("secret".into()),
        scope: String::new(),
        ca_pem: None,
        paths: Paths::default(),
        store_id: None,
        country_code: "SE".into(),
    })
    .unwrap();
    let order = "4b9e81d5-e3de-4a66-8b70-b81703b01500";
    for spelling in [
        order,
        "4B9E81D5-E3DE-4A66-8B70-B81703B01500",
        "4b9e81d5e3de4a668b70b81703b01500",
    ] {
        assert_eq!(walley.instrument_of(spelling), order, "{spelling}");
    }
    // Not a GUID: its own spelling.
    assert_eq!(walley.instrument_of("wo-1"), "wo-1");
}
