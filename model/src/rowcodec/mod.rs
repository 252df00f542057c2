//! TiDB row value formats v1 and v2.
