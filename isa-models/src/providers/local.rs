//! The local ONNX embedder as a provider: embeddings with no key and no network.

use std::sync::Arc;

use async_trait::async_trait;
use isa_core::{
    Capabilities, ChatRequest, ChatStream, Embedder, EmbeddingRequest, EmbeddingResponse, Error,
    ModelProvider, Result, TextKind, Usage,
};

/// Embeddings from an in-process [`Embedder`] (normally [`OrtEmbedder`](crate::OrtEmbedder)).
pub struct LocalEmbeddings {
    name: String,
    embedder: Arc<dyn Embedder>,
}

impl LocalEmbeddings {
    /// A provider named `name` over `embedder`.
    pub fn new(name: impl Into<String>, embedder: Arc<dyn Embedder>) -> Self {
        LocalEmbeddings {
            name: name.into(),
            embedder,
        }
    }
}

#[async_trait]
impl ModelProvider for LocalEmbeddings {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            embeddings: true,
            ..Default::default()
        }
    }

    async fn chat_stream(&self, _request: ChatRequest) -> Result<ChatStream> {
        Err(Error::Unsupported(format!(
            "{} serves embeddings only",
            self.name
        )))
    }

    async fn embed(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse> {
        if let Some(d) = request.dimensions
            && d as usize != self.embedder.dimensions()
        {
            return Err(Error::invalid(format!(
                "{} makes {}-dimensional vectors; dimensions {d} is not available",
                request.model,
                self.embedder.dimensions()
            )));
        }
        let embeddings = self
            .embedder
            .embed(&request.input, TextKind::Document)
            .await?;
        // Counted the way the gateway counts text it has no tokenizer for.
        let input_tokens = request
            .input
            .iter()
            .map(|t| crate::estimate_tokens(t))
            .sum();
        Ok(EmbeddingResponse {
            embeddings,
            usage: Some(Usage {
                input_tokens,
                output_tokens: 0,
            }),
        })
    }
}
