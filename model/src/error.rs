//! The one error type of every decoder in this crate.
//!
//! Decoders see bytes from the network and from storage. They report what was wrong and where,
//! so that an operator reading a log line can tell a truncated row from a schema mismatch.

/// Why bytes (or JSON) could not be decoded, or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input ended before a complete value was read.
    #[error("{what}: truncated input (need {needed} bytes, have {available})")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were needed.
        needed: usize,
        /// How many bytes were left.
        available: usize,
    },
    /// The input is complete but its contents are not valid for the format.
    #[error("{what}: {detail}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The input is valid for the format but uses a feature Tidal does not decode.
    #[error("{what}: unsupported: {detail}")]
    Unsupported {
        /// What was being decoded.
        what: &'static str,
        /// Which feature it used.
        detail: String,
    },
}

impl CodecError {
    /// A [`CodecError::Invalid`] for `what` with a detail message.
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        CodecError::Invalid {
            what,
            detail: detail.into(),
        }
    }

    /// A [`CodecError::Unsupported`] for `what` with a detail message.
    pub fn unsupported(what: &'static str, detail: impl Into<String>) -> Self {
        CodecError::Unsupported {
            what,
            detail: detail.into(),
        }
    }

    /// Checks that `input` holds at least `needed` bytes.
    pub fn ensure_len(what: &'static str, input: &[u8], needed: usize) -> Result<(), Self> {
        if input.len() < needed {
            Err(CodecError::Truncated {
                what,
                needed,
                available: input.len(),
            })
        } else {
            Ok(())
        }
    }
}
