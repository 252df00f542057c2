//! Memcomparable and flag-prefixed datum encodings.
