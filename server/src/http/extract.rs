//! Request extraction and validation with the service's error shape: 413
//! over the body limit, 400 malformed JSON, invalid UTF-8 or an unreadable
//! path or query string, 422 a body that is not a JSON object, wrong types,
//! missing or empty text, 413 text longer than its limit.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, IgnoredAny};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::config::Limits;

/// Longest id (characters) of a document, session or job.
pub const MAX_ID_CHARS: usize = 256;
/// Longest short field (characters): tenant, status, created_at, category,
/// priority, queue, channel, customer id, tag, field name.
pub const MAX_SHORT_CHARS: usize = 256;

/// A JSON body, read up to the configured byte limit and deserialised.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.limits().max_body_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| {
                ApiError::TooLarge(format!("request body is larger than {limit} bytes"))
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Path parameters; a path that cannot be read (e.g. percent-encoding that
/// is not UTF-8) is a 400 with the JSON error body.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) if e.status().is_server_error() => Err(ApiError::Internal(e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// An id from the path, checked like every id ([`check_id`]).
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiPath(id) = ApiPath::<String>::from_request_parts(parts, state).await?;
        check_id("id", &id)?;
        Ok(PathId(id))
    }
}

/// A query string; one that cannot be read (e.g. a repeated parameter) is a
/// 400 with the JSON error body.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// `?tenant=` for GET/DELETE and admin routes (ignored when an API key pins the tenant).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant (empty = the default tenant; a key's tenant wins).
    #[serde(default)]
    pub tenant: String,
}

/// Parses a JSON body, telling syntax errors (400) from type errors (422).
/// Every body is a JSON object: an array is not read field by field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::MalformedJson("the request body is empty".into()));
    };
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidInput(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    };
    if *first != b'{' {
        // Valid JSON of the wrong shape is the client's type error (422);
        // broken JSON stays a syntax error (400).
        serde_json::from_slice::<IgnoredAny>(bytes).map_err(classify)?;
        return Err(ApiError::InvalidInput(
            "the request body must be a JSON object (`{...}`)".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(classify)
}

/// True when `value` has no visible character: empty, whitespace, control
/// characters, invisible format characters (zero-width space and joiners,
/// word joiner, BOM, soft hyphen, direction marks, variation selectors), the
/// blank Braille pattern, and combining marks with no base character to
/// attach to (they render as nothing, or as a dotted circle).
pub fn is_blank(value: &str) -> bool {
    value.chars().all(is_blank_char)
}

/// One character of [`is_blank`]'s set: whitespace, control, invisible or combining.
fn is_blank_char(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_invisible(c) || is_combining(c)
}

/// Combining marks (the main Unicode blocks): shown only on a base character.
const COMBINING: &[(char, char)] = &[
    ('\u{0300}', '\u{036F}'),
    ('\u{0483}', '\u{0489}'),
    ('\u{0591}', '\u{05BD}'),
    ('\u{0610}', '\u{061A}'),
    ('\u{064B}', '\u{065F}'),
    ('\u{0E31}', '\u{0E31}'),
    ('\u{0E34}', '\u{0E3A}'),
    ('\u{0E47}', '\u{0E4E}'),
    ('\u{1AB0}', '\u{1AFF}'),
    ('\u{1DC0}', '\u{1DFF}'),
    ('\u{20D0}', '\u{20FF}'),
    ('\u{302A}', '\u{302F}'),
    ('\u{3099}', '\u{309A}'),
    ('\u{FE20}', '\u{FE2F}'),
];

/// Default-ignorable and other zero-width characters that render as nothing.
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{2800}', '\u{2800}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

/// Unicode `White_Space` ([`char::is_whitespace`]), as ranges for the OpenAPI patterns.
const WHITESPACE: &[(char, char)] = &[
    ('\u{0009}', '\u{000D}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00A0}', '\u{00A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

/// Control characters (`Cc`, [`char::is_control`]), as ranges for the OpenAPI patterns.
const CONTROL: &[(char, char)] = &[('\u{0000}', '\u{001F}'), ('\u{007F}', '\u{009F}')];

fn in_ranges(ranges: &[(char, char)], c: char) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

fn is_combining(c: char) -> bool {
    in_ranges(COMBINING, c)
}

fn is_invisible(c: char) -> bool {
    in_ranges(INVISIBLE, c)
}

/// The character classes behind the checks, as the inside of a regular
/// expression class (`[...]`) for the OpenAPI document: the same tables the
/// checks use, so the document cannot drift from them. Characters of the
/// basic plane are written `\uXXXX`, others literally (both ECMA-262 with
/// the `u` flag and Python read them so).
pub mod classes {
    use super::{COMBINING, CONTROL, INVISIBLE, WHITESPACE};

    fn class(tables: &[&[(char, char)]]) -> String {
        let one = |c: char| match c {
            '\u{0}'..='\u{FFFF}' => format!("\\u{:04X}", c as u32),
            _ => c.to_string(),
        };
        let mut out = String::new();
        for &(lo, hi) in tables.iter().flat_map(|t| t.iter()) {
            out.push_str(&one(lo));
            if hi != lo {
                out.push('-');
                out.push_str(&one(hi));
            }
        }
        out
    }

    /// Characters that are not visible ([`super::is_blank`]).
    pub fn blank() -> String {
        class(&[WHITESPACE, CONTROL, INVISIBLE, COMBINING])
    }

    /// Whitespace.
    pub fn whitespace() -> String {
        class(&[WHITESPACE])
    }

    /// Control characters.
    pub fn control() -> String {
        class(&[CONTROL])
    }

    /// Characters an id may not hold anywhere ([`super::check_id`]): control,
    /// invisible, combining, `/` and `\`.
    pub fn not_in_id() -> String {
        format!("{}/\\\\", class(&[CONTROL, INVISIBLE, COMBINING]))
    }
}

/// Checks one text field: required fields must hold visible text, and no
/// field may be longer than the text limit.
pub fn check_text(field: &str, value: &str, required: bool, limits: &Limits) -> ApiResult<()> {
    if required && is_blank(value) {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not be empty"
        )));
    }
    check_len(field, value, limits.max_text_chars)
}

/// Checks a short field (tenant, status, created_at, labels, ...): at most
/// [`MAX_SHORT_CHARS`] characters.
pub fn check_short(field: &str, value: &str) -> ApiResult<()> {
    check_len(field, value, MAX_SHORT_CHARS)
}

/// Checks structured fields (a ticket's or a correction's): short names,
/// values within the text limit.
pub fn check_fields(fields: &BTreeMap<String, String>, limits: &Limits) -> ApiResult<()> {
    for (name, value) in fields {
        check_short("fields (a field name)", name)?;
        check_text(name, value, false, limits)?;
    }
    Ok(())
}

fn check_len(field: &str, value: &str, max: usize) -> ApiResult<()> {
    // Cheap upper bound first: a UTF-8 string has at most as many chars as bytes.
    if value.len() > max && value.chars().count() > max {
        return Err(ApiError::TooLarge(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    Ok(())
}

/// Checks an id taken from a path or a body (`field` names it in errors):
/// visible text, at most [`MAX_ID_CHARS`] characters, no control characters, no
/// path separators or `..` segments (ids name files in some stores and URLs
/// in every client), no invisible or direction-changing characters (an id
/// must read as what it is).
pub fn check_id(field: &str, id: &str) -> ApiResult<()> {
    if is_blank(id) {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not be empty"
        )));
    }
    check_len(field, id, MAX_ID_CHARS)?;
    if id.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not contain control characters"
        )));
    }
    if id.contains('/') || id.contains('\\') || id.contains("..") {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not contain `/`, `\\` or `..`"
        )));
    }
    if id.chars().any(|c| is_invisible(c) || is_combining(c)) || id.trim() != id {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not contain invisible or direction-changing characters, or start or end with spaces"
        )));
    }
    Ok(())
}

/// Checks a requested tenant (empty = the default tenant): short, and no
/// control characters.
pub fn check_tenant(tenant: &str) -> ApiResult<()> {
    check_short("tenant", tenant)?;
    if tenant.chars().any(char::is_control) {
        return Err(ApiError::InvalidInput(
            "`tenant` must not contain control characters".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[allow(dead_code)]
        text: String,
    }

    #[test]
    fn syntax_errors_and_type_errors_are_told_apart() {
        let syntax = parse_json::<Body>(b"{\"text\": ").unwrap_err();
        assert_eq!(syntax.code(), "malformed_json");
        let types = parse_json::<Body>(b"{\"text\": 5}").unwrap_err();
        assert_eq!(types.code(), "invalid_input");
        let utf8 = parse_json::<Body>(b"{\"text\": \"\xff\xfe\"}").unwrap_err();
        assert_eq!(utf8.code(), "malformed_json");
        assert!(parse_json::<Body>(b"  ").is_err());
        assert!(parse_json::<Body>(b"{\"text\": \"ok\"}").is_ok());
    }

    #[test]
    fn text_limits_count_characters_not_bytes() {
        let limits = Limits {
            max_text_chars: 3,
            ..Limits::default()
        };
        assert!(check_text("t", "停机了", true, &limits).is_ok());
        assert_eq!(
            check_text("t", "停机了吗", true, &limits)
                .unwrap_err()
                .code(),
            "too_large"
        );
        assert_eq!(
            check_text("t", "  ", true, &limits).unwrap_err().code(),
            "invalid_input"
        );
        assert!(check_text("t", "", false, &limits).is_ok());
    }

    #[test]
    fn the_documented_classes_are_the_checked_ones() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(in_ranges(WHITESPACE, c), c.is_whitespace(), "{c:?}");
            assert_eq!(in_ranges(CONTROL, c), c.is_control(), "{c:?}");
        }
        assert!(classes::blank().starts_with("\\u0009-\\u000D\\u0020"));
        let id = classes::not_in_id();
        assert!(
            id.contains("\u{E0000}-\u{E0FFF}") && id.ends_with("\\uFE2F/\\\\"),
            "{id}"
        );
    }

    #[test]
    fn ids_count_characters() {
        assert!(check_id("id", &"停".repeat(MAX_ID_CHARS)).is_ok());
        let long = check_id("id", &"停".repeat(MAX_ID_CHARS + 1)).unwrap_err();
        assert_eq!(long.code(), "too_large");
    }
}
