//! Hugging Face: chat through its OpenAI-compatible router, embeddings through the
//! feature-extraction pipeline of its inference provider.

use async_trait::async_trait;
use isa_core::{
    Capabilities, ChatRequest, ChatStream, EmbeddingRequest, EmbeddingResponse, ModelProvider,
    Result,
};
use serde_json::{Value, json};

use super::{http::Endpoint, openai::OpenAi};

/// Hugging Face's router.
pub const HUGGING_FACE_BASE_URL: &str = "https://router.huggingface.co";

/// Hugging Face's inference router.
#[derive(Debug, Clone)]
pub struct HuggingFace {
    chat: OpenAi,
    endpoint: Endpoint,
    api_key: String,
}

impl HuggingFace {
    /// Hugging Face at `base_url` (normally [`HUGGING_FACE_BASE_URL`]).
    pub fn new(name: &str, base_url: &str, api_key: String) -> Result<Self> {
        let base_url = base_url.trim_end_matches('/');
        Ok(HuggingFace {
            chat: OpenAi::compatible(name, &format!("{base_url}/v1"), Some(api_key.clone()))?,
            endpoint: Endpoint::new(name, base_url)?,
            api_key,
        })
    }
}

#[async_trait]
impl ModelProvider for HuggingFace {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            tools: true,
            embeddings: true,
            images: false,
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        self.chat.chat_stream(request).await
    }

    async fn embed(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        let path = format!(
            "/hf-inference/models/{}/pipeline/feature-extraction",
            request.model
        );
        let http = self
            .endpoint
            .client
            .post(self.endpoint.url(&path))
            .bearer_auth(&self.api_key)
            .json(&json!({"inputs": request.input, "normalize": true}));
        let answer: Value = self.endpoint.send_json(http).await?;
        let embeddings = answer
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .map(super::float_vector)
                    .collect::<Option<Vec<Vec<f32>>>>()
            })
            .ok_or_else(|| {
                self.endpoint
                    .malformed("feature extraction: expected one vector per input")
            })?;
        if embeddings.len() != request.input.len() {
            return Err(self
                .endpoint
                .malformed("feature extraction: count differs from inputs"));
        }
        Ok(EmbeddingResponse {
            embeddings,
            usage: None,
        })
    }
}
