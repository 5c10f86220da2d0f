//! The one mapping from errors to HTTP responses: a status and the SPEC §6
//! envelope `{"success": false, "data": {}, "error": {code, reason, message}}`.
//! Causes of internal errors are logged here, never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::reason::Reason;
use crate::service::Error;

/// Everything a handler or middleware can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Service(#[from] Error),
    /// 401 `missing_key`: no `Authorization: Bearer` header.
    #[error("send your API key as 'Authorization: Bearer <key>'")]
    MissingKey,
    /// 400 `bad_request`: a malformed id, query or body.
    #[error("{0}")]
    BadRequest(String),
    /// 404 `not_found`: no such route.
    #[error("no such route; see /openapi.json")]
    NoRoute,
    /// 405 `method_not_allowed`.
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// 413 `payload_too_large`.
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 408 `timeout`: the request took too long.
    #[error("the request took too long")]
    Timeout,
    /// 431 `headers_too_large`: the request line and headers are too large.
    #[error("the request line and headers take more than {0} bytes")]
    HeadersTooLarge(usize),
}

impl ApiError {
    /// Status and machine-readable reason.
    pub fn status_reason(&self) -> (StatusCode, &'static str) {
        let reason = self.reason();
        (reason.status(), reason.as_str())
    }

    /// The machine-readable reason (its status goes with it).
    pub fn reason(&self) -> Reason {
        match self {
            Self::MissingKey => Reason::MissingKey,
            Self::BadRequest(_) => Reason::BadRequest,
            Self::NoRoute => Reason::NotFound,
            Self::MethodNotAllowed => Reason::MethodNotAllowed,
            Self::PayloadTooLarge(_) => Reason::PayloadTooLarge,
            Self::Timeout => Reason::Timeout,
            Self::HeadersTooLarge(_) => Reason::HeadersTooLarge,
            Self::Service(e) => match e {
                Error::Invalid(_) => Reason::BadRequest,
                Error::Malformed(_) => Reason::MalformedKey,
                Error::NotFound(_) => Reason::InvalidKey,
                Error::Revoked(_) => Reason::KeyRevoked,
                Error::Expired(_) => Reason::KeyExpired,
                Error::GuildMismatch => Reason::GuildMismatch,
                Error::InsufficientScope(_) => Reason::InsufficientScope,
                Error::IpNotAllowed => Reason::IpNotAllowed,
                Error::RateLimited { .. } => Reason::RateLimited,
                Error::Missing(_) => Reason::NotFound,
                Error::Discord(_) => Reason::DiscordError,
                Error::Ambiguous { .. }
                | Error::StillActive(_)
                | Error::LimitReached { .. }
                | Error::GuildNeeded { .. } => Reason::Conflict,
                Error::Internal(_) => Reason::InternalError,
                Error::Suspended(_) | Error::BreakerTripped(_) => Reason::KeySuspended,
                Error::NotSuspended(_) => Reason::Conflict,
                Error::RoleNotAllowed(_) => Reason::RoleNotAllowed,
                // Never reached over HTTP (keys are made by the bot or the CLI).
                Error::OutranksMaker(_) => Reason::InsufficientScope,
                Error::MemberProtected(_) => Reason::MemberProtected,
                Error::DiscordPaused { .. } => Reason::DiscordPaused,
                Error::DiscordBusy { .. } => Reason::DiscordBusy,
                Error::IndexStale => Reason::IndexStale,
                Error::DatabaseUnavailable => Reason::DatabaseUnavailable,
                Error::NotLinked(_) => Reason::NotLinked,
                Error::AmbiguousLink(_) => Reason::AmbiguousLink,
                Error::LinkerError(_) => Reason::LinkerError,
                Error::LinkerLimited { .. } => Reason::LinkerLimited,
            },
        }
    }

    /// The client-facing message: specific for client errors, generic for
    /// ours. Key errors never echo the presented token.
    pub fn message(&self) -> String {
        match self {
            Self::Service(Error::NotFound(_)) => "the API key is not recognised".to_owned(),
            Self::Service(Error::Revoked(_)) => "this API key has been revoked".to_owned(),
            Self::Service(Error::Expired(_)) => "this API key has expired".to_owned(),
            Self::Service(Error::Suspended(_)) => {
                "this API key is suspended; a server admin can resume it with /apikey resume".to_owned()
            }
            Self::Service(Error::Malformed(m)) => format!("malformed API key: {m}"),
            Self::Service(Error::Internal(_)) => "something went wrong on our side; try again later".to_owned(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason) = self.status_reason();
        match &self {
            Self::Service(Error::Internal(cause)) => tracing::error!(error = format!("{cause:#}"), "request failed"),
            Self::Service(Error::DatabaseUnavailable) => {
                tracing::warn!("the database is unreachable; refused a request that needs it (503)")
            }
            _ => {}
        }
        let body = json!({
            "success": false,
            "data": {},
            "error": { "code": status.as_u16(), "reason": reason, "message": self.message() },
        });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::MissingKey | Self::Service(Error::Malformed(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Service(Error::NotFound(_) | Error::Revoked(_) | Error::Expired(_) | Error::Suspended(_)) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            Self::Service(
                Error::RateLimited { retry_after_secs }
                | Error::DiscordPaused { retry_after_secs, .. }
                | Error::DiscordBusy { retry_after_secs, .. }
                | Error::LinkerLimited { retry_after_secs, .. },
            ) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::Service(Error::IndexStale) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Service(Error::DatabaseUnavailable) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorReason(reason));
        response
    }
}

/// Marks a response with its error reason, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct ErrorReason(pub &'static str);

/// A successful response in the envelope.
pub fn ok(data: impl serde::Serialize) -> Response {
    Json(envelope(data)).into_response()
}

/// The success envelope around `data`.
pub fn envelope(data: impl serde::Serialize) -> serde_json::Value {
    json!({ "success": true, "data": data })
}
