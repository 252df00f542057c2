//! Test fixtures shared by the verifier's unit tests.

use tidal_model::mysql;
use tidal_model::schema::{CIStr, ColumnInfo, FieldType, SchemaState, TableInfo};

/// A public column with a utf8mb4 field type.
pub(crate) fn col(id: i64, name: &str, tp: u8, flag: u32) -> ColumnInfo {
    ColumnInfo {
        id,
        name: CIStr::new(name),
        offset: id - 1,
        state: SchemaState::PUBLIC,
        field_type: FieldType {
            tp,
            flag,
            flen: -1,
            decimal: -1,
            charset: "utf8mb4".into(),
            ..FieldType::default()
        },
        ..ColumnInfo::default()
    }
}

/// Table `t` (id 10) with `id INT` (the int primary key when `pk`) and `v VARCHAR`.
pub(crate) fn table(pk: bool) -> TableInfo {
    let flag = if pk {
        mysql::FLAG_PRI_KEY | mysql::FLAG_NOT_NULL
    } else {
        0
    };
    TableInfo {
        id: 10,
        name: CIStr::new("t"),
        cols: vec![
            col(1, "id", mysql::TYPE_LONG, flag),
            col(2, "v", mysql::TYPE_VARCHAR, 0),
        ],
        pk_is_handle: pk,
        ..TableInfo::default()
    }
}
