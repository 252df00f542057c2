//! API errors: `{"error_msg", "error_code"}` with TiCDC's codes and its 400/500 split.
//!
//! Clients match on `error_code` and on the HTTP status, so both follow TiCDC's `HTTPError`
//! (ticdc.md §2.1): 400 for the caller's mistakes (invalid parameter, unknown changefeed, start
//! ts before GC, refused update, ...), 500 for everything else; the body is pretty-printed like
//! gin's `IndentedJSON`. Messages are scrubbed of sink URI passwords before they are rendered
//! or logged.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::service::{ErrorCode, ServiceError};

/// The JSON body of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// `err.Error()`: `[CDC:ErrX]message`.
    pub error_msg: String,
    /// The RFC code, e.g. `CDC:ErrChangeFeedNotExists`.
    pub error_code: String,
}

/// A handler failure; converts into the TiCDC-shaped response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub ServiceError);

impl ApiError {
    /// The HTTP status TiCDC uses for this error.
    pub fn status(&self) -> StatusCode {
        if self.0.code.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    /// `ErrAPIInvalidParam` for a body that is not the expected JSON.
    pub fn bad_json(e: &dyn std::fmt::Display) -> Self {
        ApiError(ServiceError::invalid_param(format!(
            "invalid api parameter: {e}"
        )))
    }

    /// The response body.
    pub fn body(&self) -> HttpError {
        HttpError {
            error_msg: super::redact::mask_uri_passwords(&self.0.to_string()).into_owned(),
            error_code: self.0.code.as_str().to_string(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::warn!(
                error = %super::redact::mask_uri_passwords(&self.0.to_string()),
                "API request failed"
            );
        }
        let body = serde_json::to_string_pretty(&self.body()).unwrap_or_else(|_| {
            format!(
                "{{\"error_msg\":\"internal server error\",\"error_code\":\"{}\"}}",
                ErrorCode::InternalServerError.as_str()
            )
        });
        (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(
            ApiError(ServiceError::not_exists("a")).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ApiError(ServiceError::snapshot_lost(1, 2)).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let b = ApiError(ServiceError::not_exists("a")).body();
        assert_eq!(b.error_code, "CDC:ErrChangeFeedNotExists");
        assert_eq!(
            b.error_msg,
            "[CDC:ErrChangeFeedNotExists]changefeed not exists, a"
        );
        assert_eq!(
            ApiError::bad_json(&"eof").0.code,
            ErrorCode::ApiInvalidParam
        );
    }
}
