//! What the wire tests of every connector share: reading the partners'
//! documented bodies.

use serde_json::Value;

pub(super) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// An object's keys, sorted.
pub(super) fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}
