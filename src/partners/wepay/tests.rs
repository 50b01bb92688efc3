use super::*;

#[test]
fn every_documented_status_has_its_meaning() {
    let class = |status: u16| match classify(StatusCode::from_u16(status).unwrap(), b"{}") {
        PartnerError::Declined { .. } => "declined",
        PartnerError::Unavailable { .. } => "unavailable",
        PartnerError::Unknown { .. } => "unknown",
        PartnerError::Contradiction { .. } => "contradiction",
    };
    for (status, expected) in [
        (400, "declined"),
        (402, "declined"),
        (403, "declined"),
        (404, "declined"),
        (401, "unavailable"),
        (429, "unavailable"),
        (503, "unavailable"),
        (500, "unknown"),
        (502, "unknown"),
        (504, "unknown"),
    ] {
        assert_eq!(class(status), expected, "HTTP {status}");
    }
    let body =
        br#"{"error":"invalid_request","error_description":"card declined","error_code":2004}"#;
    assert_eq!(
        classify(StatusCode::BAD_REQUEST, body),
        PartnerError::Declined {
            code: "2004".into(),
            description: "card declined".into()
        }
    );
}

#[test]
fn a_card_id_is_one_number_however_many_zeros_lead_it() {
    let wepay = Wepay::new(Settings {
        base_url: "http://127.0.0.1:9".into(),
        account_id: 1,
        access_token: Secret::new("token".into()),
        ca_pem: None,
    })
    .unwrap();
    for (token, card) in [("0042", "42"), ("42", "42"), ("0", "0"), ("000", "0")] {
        assert_eq!(wepay.instrument_of(token), card, "{token}");
    }
    // Not a card id: left as it is.
    assert_eq!(wepay.instrument_of("0x42"), "0x42");
}
