//! How records are written into Redis values: one format byte, then the
//! record in postcard (a compact, deterministic serde format: varint
//! integers, ids as 16 bytes). A change of layout gets a new format byte and
//! keeps a reader for the old one.

use serde::{Serialize, de::DeserializeOwned};

use crate::store::StoreError;

/// The layout of every record written today.
const FORMAT: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![FORMAT]).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, record)) => {
            postcard::from_bytes(record).map_err(|e| StoreError::Corrupt(Box::new(e)))
        }
        _ => Err(StoreError::Corrupt(
            "a record in an unknown format (or not ours)".into(),
        )),
    }
}
