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
