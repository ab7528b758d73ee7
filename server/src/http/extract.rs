//! Request-body extraction and validation with the service's error shape:
//! 413 over the body limit, 400 malformed JSON or invalid UTF-8, 422 wrong
//! types, missing or empty text, 413 text longer than the text limit.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::config::Limits;

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

/// Parses a JSON body, telling syntax errors (400) from type errors (422).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("the request body is empty".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::InvalidInput(e.to_string()),
        _ => ApiError::MalformedJson(e.to_string()),
    })
}

/// Checks one text field: required fields must hold non-blank text, and no
/// field may be longer than the text limit.
pub fn check_text(field: &str, value: &str, required: bool, limits: &Limits) -> ApiResult<()> {
    if required && value.trim().is_empty() {
        return Err(ApiError::InvalidInput(format!(
            "`{field}` must not be empty"
        )));
    }
    let max = limits.max_text_chars;
    // Cheap upper bound first: a UTF-8 string has at most as many chars as bytes.
    if value.len() > max && value.chars().count() > max {
        return Err(ApiError::TooLarge(format!(
            "`{field}` is longer than {max} characters"
        )));
    }
    Ok(())
}

/// Checks an id taken from a path or a body.
pub fn check_id(id: &str) -> ApiResult<()> {
    if id.trim().is_empty() {
        return Err(ApiError::InvalidInput("the id must not be empty".into()));
    }
    if id.len() > 256 {
        return Err(ApiError::TooLarge("the id is longer than 256 bytes".into()));
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
}
