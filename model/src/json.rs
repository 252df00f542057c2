//! JSON values in TiDB's binary JSON form.

use serde::{Deserialize, Serialize};

/// A JSON value in TiDB's binary form: a type code and the encoded value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Json {
    type_code: u8,
    value: Vec<u8>,
}
