//! Every machine-readable reason an error answer carries (`error.reason`),
//! in one list with its HTTP status. The README's Reasons, the OpenAPI
//! document's `ErrorBody.reason` enum and the Luau client's `Reason` type
//! are held equal to it by the tests below.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    BadRequest,
    MissingKey,
    MalformedKey,
    InvalidKey,
    KeyRevoked,
    KeyExpired,
    KeySuspended,
    GuildMismatch,
    InsufficientScope,
    IpNotAllowed,
    RoleNotAllowed,
    MemberProtected,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    PayloadTooLarge,
    RateLimited,
    HeadersTooLarge,
    InternalError,
    DiscordError,
    DiscordPaused,
    DiscordBusy,
    IndexStale,
    DatabaseUnavailable,
    NotLinked,
    AmbiguousLink,
    LinkerError,
    LinkerLimited,
}

impl Reason {
    pub const ALL: [Reason; 29] = [
        Self::BadRequest,
        Self::MissingKey,
        Self::MalformedKey,
        Self::InvalidKey,
        Self::KeyRevoked,
        Self::KeyExpired,
        Self::KeySuspended,
        Self::GuildMismatch,
        Self::InsufficientScope,
        Self::IpNotAllowed,
        Self::RoleNotAllowed,
        Self::MemberProtected,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Timeout,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::RateLimited,
        Self::HeadersTooLarge,
        Self::InternalError,
        Self::DiscordError,
        Self::DiscordPaused,
        Self::DiscordBusy,
        Self::IndexStale,
        Self::DatabaseUnavailable,
        Self::NotLinked,
        Self::AmbiguousLink,
        Self::LinkerError,
        Self::LinkerLimited,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::MissingKey => "missing_key",
            Self::MalformedKey => "malformed_key",
            Self::InvalidKey => "invalid_key",
            Self::KeyRevoked => "key_revoked",
            Self::KeyExpired => "key_expired",
            Self::KeySuspended => "key_suspended",
            Self::GuildMismatch => "guild_mismatch",
            Self::InsufficientScope => "insufficient_scope",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::RoleNotAllowed => "role_not_allowed",
            Self::MemberProtected => "member_protected",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::HeadersTooLarge => "headers_too_large",
            Self::InternalError => "internal_error",
            Self::DiscordError => "discord_error",
            Self::DiscordPaused => "discord_paused",
            Self::DiscordBusy => "discord_busy",
            Self::IndexStale => "index_stale",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::NotLinked => "not_linked",
            Self::AmbiguousLink => "ambiguous_link",
            Self::LinkerError => "linker_error",
            Self::LinkerLimited => "linker_limited",
        }
    }

    /// The one status each reason is answered with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::MissingKey
            | Self::MalformedKey
            | Self::InvalidKey
            | Self::KeyRevoked
            | Self::KeyExpired
            | Self::KeySuspended => StatusCode::UNAUTHORIZED,
            Self::GuildMismatch
            | Self::InsufficientScope
            | Self::IpNotAllowed
            | Self::RoleNotAllowed
            | Self::MemberProtected => StatusCode::FORBIDDEN,
            Self::NotFound | Self::NotLinked => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict | Self::AmbiguousLink => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DiscordError | Self::LinkerError => StatusCode::BAD_GATEWAY,
            Self::DiscordPaused
            | Self::DiscordBusy
            | Self::IndexStale
            | Self::DatabaseUnavailable
            | Self::LinkerLimited => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Reason;

    fn all() -> BTreeSet<String> {
        Reason::ALL.iter().map(|r| r.as_str().to_owned()).collect()
    }

    fn read(path: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    /// The `snake_case` words in backticks in `text`.
    fn backticked(text: &str) -> BTreeSet<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_variant_is_listed_once_and_serialises_as_its_name() {
        assert_eq!(all().len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn the_readme_lists_exactly_these_reasons() {
        let readme = read("README.md");
        let start = readme.find("\nReasons: ").expect("the README's Reasons paragraph");
        let paragraph = &readme[start..readme[start..].find("\n\n").map_or(readme.len(), |e| start + e)];
        assert_eq!(backticked(paragraph), all(), "README.md's Reasons paragraph");
    }

    /// The Luau client's `Reason` is exactly this list; its own reasons (no
    /// answer came, or it refused to send) are a separate `ClientReason`
    /// that shares none of them.
    #[test]
    fn the_luau_client_knows_exactly_these_reasons_and_keeps_its_own_apart() {
        let lua = read("clients/roblox/GuildKey.lua");
        let union = |name: &str| -> BTreeSet<String> {
            let start = lua.find(&format!("export type {name} =")).unwrap_or_else(|| panic!("the Luau {name} type"));
            let end = start + lua[start..].find("\n\n").expect("the type's end");
            lua[start..end]
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .flat_map(|l| l.split('"').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>())
                .collect()
        };
        assert_eq!(union("Reason"), all(), "GuildKey.lua's Reason");
        let own = union("ClientReason");
        assert!(own.contains("client_budget") && own.contains("network_error"), "{own:?}");
        assert!(own.is_disjoint(&all()), "a client's own reason the listener also sends: {own:?}");
    }

    #[test]
    fn the_openapi_document_enumerates_exactly_these_reasons() {
        let doc = serde_json::to_value(crate::http::api_doc()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let reason = &schemas["ErrorBody"]["properties"]["reason"];
        let listed = match reason["$ref"].as_str() {
            Some(r) => &schemas[r.rsplit('/').next().unwrap()]["enum"],
            None => &reason["enum"],
        };
        let listed: BTreeSet<String> =
            listed.as_array().expect("an enum").iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        assert_eq!(listed, all());
    }
}
