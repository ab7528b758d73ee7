//! `POST /v1/embeddings` in OpenAI's shape, so other tools (Zammad's
//! OpenAI-compatible provider, Dify, FastGPT) can use the service's local
//! model: the same vectors as `triage embed`, through the engine's
//! micro-batcher ([`models::BatchingEmbedder`]) with the other requests.

use axum::extract::State;
use axum::Json;
use base64::Engine as _;
use models::EmbedKind;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{check_short, check_text, ApiJson};
use super::AppState;

/// Most texts in one request.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

/// One text or several.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts (at most 256).
    Many(Vec<String>),
}

/// How the texts are embedded: as questions (`query`, the default, as
/// `triage embed`) or stored documents (`passage`).
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// A question or request.
    #[default]
    Query,
    /// A stored document.
    Passage,
}

/// How vectors are returned: JSON numbers, or base64 of little-endian f32
/// (what OpenAI's Python client asks for by default).
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// A list of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 values.
    Base64,
}

/// Body of `POST /v1/embeddings` (OpenAI's, plus `input_type`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// The model: informational (the service's one model answers, and its name comes back).
    #[serde(default)]
    model: Option<String>,
    /// The text or texts; each must hold visible text.
    input: EmbeddingInput,
    /// `query` (default) or `passage`.
    #[serde(default)]
    input_type: Option<InputType>,
    /// `float` (default) or `base64`.
    #[serde(default)]
    encoding_format: Option<EncodingFormat>,
    /// The vectors' length: only the model's own is possible.
    #[serde(default)]
    dimensions: Option<usize>,
    /// The end user (informational, not stored).
    #[serde(default)]
    user: Option<String>,
}

/// One vector.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingData {
    /// Always `embedding`.
    object: &'static str,
    /// The input's position.
    index: usize,
    /// The unit-length vector: numbers, or a base64 string with `encoding_format: base64`.
    embedding: serde_json::Value,
}

/// Tokens read.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens of the inputs, as the model's tokenizer counts them.
    prompt_tokens: usize,
    /// The same (nothing is generated).
    total_tokens: usize,
}

/// Answer of `POST /v1/embeddings` (OpenAI's shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbeddingsResponse {
    /// Always `list`.
    object: &'static str,
    /// One vector per input, in order.
    data: Vec<EmbeddingData>,
    /// The model that made them.
    model: String,
    /// Tokens read.
    usage: EmbeddingUsage,
}

/// `POST /v1/embeddings`: the service's model as an OpenAI-style embeddings endpoint.
#[utoipa::path(post, path = "/embeddings", request_body = EmbeddingsRequest,
    responses((status = 200, description = "One vector per input", body = EmbeddingsResponse)))]
pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> ApiResult<Json<EmbeddingsResponse>> {
    let texts = match req.input {
        EmbeddingInput::One(t) => vec![t],
        EmbeddingInput::Many(ts) => ts,
    };
    if texts.is_empty() {
        return Err(ApiError::InvalidInput("`input` holds no text".into()));
    }
    if texts.len() > MAX_EMBEDDING_INPUTS {
        return Err(ApiError::TooLarge(format!(
            "`input` holds more than {MAX_EMBEDDING_INPUTS} texts"
        )));
    }
    for t in &texts {
        check_text("input", t, true, state.limits())?;
    }
    check_short("model", req.model.as_deref().unwrap_or_default())?;
    check_short("user", req.user.as_deref().unwrap_or_default())?;
    let kind = match req.input_type.unwrap_or_default() {
        InputType::Query => EmbedKind::Query,
        InputType::Passage => EmbedKind::Passage,
    };
    let format = req.encoding_format.unwrap_or_default();
    let dimensions = req.dimensions;
    let (vectors, tokens, model) = state
        .run(move |e| {
            let embedder = e.embedder();
            if let Some(d) = dimensions.filter(|d| *d != embedder.dim()) {
                return Err(ApiError::InvalidInput(format!(
                    "`dimensions` {d} is not possible: the model's vectors have {}",
                    embedder.dim()
                )));
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let vectors = embedder.embed(&refs, kind).map_err(|e| {
                ApiError::Internal(format!("the model could not embed the input: {e}"))
            })?;
            let tokens = texts
                .iter()
                .map(|t| {
                    embedder
                        .token_count(t, kind)
                        .unwrap_or_else(|| t.chars().count())
                })
                .sum::<usize>();
            Ok((vectors, tokens, embedder.name().to_string()))
        })
        .await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| EmbeddingData {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => serde_json::json!(v),
                EncodingFormat::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    serde_json::Value::String(
                        base64::engine::general_purpose::STANDARD.encode(bytes),
                    )
                }
            },
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}
