//! Chat streams decoded from server-sent events of JSON, shared by the providers that stream
//! that way (OpenAI, Anthropic, Gemini).

use std::collections::VecDeque;

use futures::StreamExt;
use isa_core::{ChatEvent, ChatStream, Result};
use serde_json::Value;

use super::{
    http::Endpoint,
    sse::{SseEvent, SseReader},
};

/// A provider's stream format: what each JSON event means, and what the end of the stream
/// means.
pub(crate) trait StreamDecoder: Send + 'static {
    /// Reads one event (`name` is its SSE `event:` field) into chat events.
    fn read(
        &mut self,
        endpoint: &Endpoint,
        name: Option<&str>,
        data: &Value,
        out: &mut Vec<ChatEvent>,
    ) -> Result<()>;

    /// The stream ended (at its end or at `[DONE]`): the closing events, or an error if it
    /// ended too early.
    fn finish(&mut self, endpoint: &Endpoint, out: &mut Vec<ChatEvent>) -> Result<()>;
}

struct Decoding<S, D> {
    sse: SseReader<S>,
    decoder: D,
    endpoint: Endpoint,
    pending: VecDeque<ChatEvent>,
    ended: bool,
}

/// The chat stream of a provider's SSE answer. After an error the stream ends.
pub(crate) fn decode_sse<D: StreamDecoder>(
    endpoint: Endpoint,
    response: reqwest::Response,
    decoder: D,
) -> ChatStream {
    let state = Decoding {
        sse: SseReader::new(endpoint.name.clone(), response.bytes_stream()),
        decoder,
        endpoint,
        pending: VecDeque::new(),
        ended: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            if state.ended {
                return None;
            }
            let mut out = Vec::new();
            let step = match state.sse.next().await {
                Some(Ok(SseEvent { data, .. })) if data.trim() == "[DONE]" => {
                    state.ended = true;
                    state.decoder.finish(&state.endpoint, &mut out)
                }
                Some(Ok(SseEvent { event, data })) => match serde_json::from_str::<Value>(&data) {
                    Ok(value) => {
                        state
                            .decoder
                            .read(&state.endpoint, event.as_deref(), &value, &mut out)
                    }
                    Err(e) => Err(state.endpoint.malformed(format!("stream event: {e}"))),
                },
                Some(Err(e)) => Err(e),
                None => {
                    state.ended = true;
                    state.decoder.finish(&state.endpoint, &mut out)
                }
            };
            match step {
                Ok(()) => state.pending.extend(out),
                Err(e) => {
                    state.ended = true;
                    state.pending.clear();
                    return Some((Err(e), state));
                }
            }
        }
    }))
}
