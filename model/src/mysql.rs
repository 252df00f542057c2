//! MySQL column type codes and column flags, as TiDB stores them in `FieldType`.

/// A MySQL column type code (`FieldType.Tp`).
pub type TypeCode = u8;

/// `DECIMAL` (old binary form; TiDB writes [`TYPE_NEW_DECIMAL`]).
pub const TYPE_DECIMAL: TypeCode = 0;
/// `TINYINT`.
pub const TYPE_TINY: TypeCode = 1;
/// `SMALLINT`.
pub const TYPE_SHORT: TypeCode = 2;
/// `INT`.
pub const TYPE_LONG: TypeCode = 3;
/// `FLOAT`.
pub const TYPE_FLOAT: TypeCode = 4;
/// `DOUBLE`.
pub const TYPE_DOUBLE: TypeCode = 5;
/// `NULL` type.
pub const TYPE_NULL: TypeCode = 6;
/// `TIMESTAMP` (stored in UTC).
pub const TYPE_TIMESTAMP: TypeCode = 7;
/// `BIGINT`.
pub const TYPE_LONGLONG: TypeCode = 8;
/// `MEDIUMINT`.
pub const TYPE_INT24: TypeCode = 9;
/// `DATE`.
pub const TYPE_DATE: TypeCode = 10;
/// `TIME`.
pub const TYPE_DURATION: TypeCode = 11;
/// `DATETIME`.
pub const TYPE_DATETIME: TypeCode = 12;
/// `YEAR`.
pub const TYPE_YEAR: TypeCode = 13;
/// `NEWDATE` (internal).
pub const TYPE_NEW_DATE: TypeCode = 14;
/// `VARCHAR`.
pub const TYPE_VARCHAR: TypeCode = 15;
/// `BIT`.
pub const TYPE_BIT: TypeCode = 16;
/// TiDB's `VECTOR(FLOAT32)`.
pub const TYPE_VECTOR_FLOAT32: TypeCode = 0xE1;
/// `JSON`.
pub const TYPE_JSON: TypeCode = 0xF5;
/// `DECIMAL`.
pub const TYPE_NEW_DECIMAL: TypeCode = 0xF6;
/// `ENUM`.
pub const TYPE_ENUM: TypeCode = 0xF7;
/// `SET`.
pub const TYPE_SET: TypeCode = 0xF8;
/// `TINYBLOB` / `TINYTEXT`.
pub const TYPE_TINY_BLOB: TypeCode = 0xF9;
/// `MEDIUMBLOB` / `MEDIUMTEXT`.
pub const TYPE_MEDIUM_BLOB: TypeCode = 0xFA;
/// `LONGBLOB` / `LONGTEXT`.
pub const TYPE_LONG_BLOB: TypeCode = 0xFB;
/// `BLOB` / `TEXT`.
pub const TYPE_BLOB: TypeCode = 0xFC;
/// `VARBINARY` / `VARCHAR` as TiDB names it internally.
pub const TYPE_VAR_STRING: TypeCode = 0xFD;
/// `CHAR` / `BINARY`.
pub const TYPE_STRING: TypeCode = 0xFE;
/// `GEOMETRY`.
pub const TYPE_GEOMETRY: TypeCode = 0xFF;

/// Column may not be NULL.
pub const FLAG_NOT_NULL: u32 = 1 << 0;
/// Column is part of the primary key.
pub const FLAG_PRI_KEY: u32 = 1 << 1;
/// Column is part of a unique key.
pub const FLAG_UNIQUE_KEY: u32 = 1 << 2;
/// Column is part of a non-unique key.
pub const FLAG_MULTIPLE_KEY: u32 = 1 << 3;
/// Column is a BLOB or TEXT.
pub const FLAG_BLOB: u32 = 1 << 4;
/// Integer column is UNSIGNED.
pub const FLAG_UNSIGNED: u32 = 1 << 5;
/// Column is ZEROFILL.
pub const FLAG_ZEROFILL: u32 = 1 << 6;
/// Column has a binary collation.
pub const FLAG_BINARY: u32 = 1 << 7;
/// Column is an ENUM.
pub const FLAG_ENUM: u32 = 1 << 8;
/// Column is AUTO_INCREMENT.
pub const FLAG_AUTO_INCREMENT: u32 = 1 << 9;
/// Column is a TIMESTAMP.
pub const FLAG_TIMESTAMP: u32 = 1 << 10;
/// Column is a SET.
pub const FLAG_SET: u32 = 1 << 11;
/// Column has no default value.
pub const FLAG_NO_DEFAULT_VALUE: u32 = 1 << 12;
/// Column is `ON UPDATE CURRENT_TIMESTAMP`.
pub const FLAG_ON_UPDATE_NOW: u32 = 1 << 13;

/// True for the integer types (including `YEAR`), whose row-v2 bytes are a variable-width int.
pub fn is_integer_type(tp: TypeCode) -> bool {
    matches!(
        tp,
        TYPE_TINY | TYPE_SHORT | TYPE_INT24 | TYPE_LONG | TYPE_LONGLONG | TYPE_YEAR
    )
}

/// True for the string and blob types, whose row-v2 bytes are the raw value.
pub fn is_string_type(tp: TypeCode) -> bool {
    matches!(
        tp,
        TYPE_VARCHAR
            | TYPE_VAR_STRING
            | TYPE_STRING
            | TYPE_TINY_BLOB
            | TYPE_MEDIUM_BLOB
            | TYPE_LONG_BLOB
            | TYPE_BLOB
            | TYPE_GEOMETRY
    )
}

/// True for `DATE`, `DATETIME` and `TIMESTAMP`, whose row bytes are a packed time.
pub fn is_time_type(tp: TypeCode) -> bool {
    matches!(
        tp,
        TYPE_DATE | TYPE_DATETIME | TYPE_TIMESTAMP | TYPE_NEW_DATE
    )
}
