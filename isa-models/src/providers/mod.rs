//! Model providers, each a [`ModelProvider`](isa_core::ModelProvider) over its documented wire
//! format: requests translated from the neutral [`ChatRequest`](isa_core::ChatRequest), streams
//! translated into [`ChatEvent`](isa_core::ChatEvent)s with tool calls numbered from 0.

mod anthropic;
mod gemini;
pub(crate) mod http;
mod huggingface;
mod local;
pub(crate) mod openai;
mod replicate;
pub mod sse;
mod stream;

pub use anthropic::{ANTHROPIC_BASE_URL, ANTHROPIC_VERSION, Anthropic, DEFAULT_MAX_TOKENS};
pub use gemini::{GEMINI_BASE_URL, Gemini};
pub use http::CONNECT_TIMEOUT;
pub use huggingface::{HUGGING_FACE_BASE_URL, HuggingFace};
pub use local::LocalEmbeddings;
pub use openai::{OPENAI_BASE_URL, OpenAi};
pub use replicate::{REPLICATE_BASE_URL, Replicate};

/// A JSON array of numbers as a vector, or `None` when it is anything else.
pub(crate) fn float_vector(value: &serde_json::Value) -> Option<Vec<f32>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_f64().map(|f| f as f32))
        .collect()
}
