//! The agent loop's own cost per turn: a scripted model and tools that answer at once, so
//! what is measured is the loop (discovery, streaming the turn, running the calls at once,
//! feeding results back, the events), side by side with the least the same turns need: the same
//! model streams read and the same tool calls made in a plain loop.
#![allow(missing_docs)] // criterion_group! generates undocumented functions
#![allow(clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use isa_agent::{Agent, ToolReply, ToolSource};
use isa_core::{
    Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatStream, FinishReason, JsonObject,
    ModelProvider, Result, Role, ToolSpec, Usage,
};
use serde_json::json;

/// Turns per run: two with two tool calls each, then the answer.
const TURNS: u64 = 3;

/// A model that asks for two tool calls until the conversation holds four results, then
/// answers; each turn streamed in pieces as a provider streams it.
struct ScriptedModel;

fn turn_events(request: &ChatRequest) -> Vec<Result<ChatEvent>> {
    let results = request
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .count();
    let mut events = Vec::new();
    if results < 4 {
        for (index, name) in [(0u32, "get_weather"), (1, "get_time")] {
            events.push(Ok(ChatEvent::ToolCallStart {
                index,
                id: format!("call_{results}_{index}"),
                name: name.into(),
            }));
            for piece in [r#"{"city": "#, r#""Paris", "#, r#""days": 3}"#] {
                events.push(Ok(ChatEvent::ToolCallDelta {
                    index,
                    arguments: piece.into(),
                }));
            }
        }
    } else {
        for piece in ["Sunny ", "in Paris; ", "09:00 ", "in Tokyo."] {
            events.push(Ok(ChatEvent::TextDelta { text: piece.into() }));
        }
    }
    events.push(Ok(ChatEvent::Usage {
        usage: Usage {
            input_tokens: 40,
            output_tokens: 12,
        },
    }));
    events.push(Ok(ChatEvent::Finish {
        reason: FinishReason::Stop,
    }));
    events
}

#[async_trait]
impl ModelProvider for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            tools: true,
            ..Capabilities::default()
        }
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        Ok(Box::pin(futures::stream::iter(turn_events(&request))))
    }
}

/// Five tools found at once; each call answers at once with a short JSON text.
struct InstantTools;

#[async_trait]
impl ToolSource for InstantTools {
    async fn discover(&self, _: &str, limit: usize) -> Result<Vec<ToolSpec>> {
        Ok([
            "get_weather",
            "get_time",
            "send_email",
            "web_search",
            "file_list",
        ]
        .iter()
        .take(limit)
        .map(|name| ToolSpec::new(*name, "a tool"))
        .collect())
    }
    async fn call(&self, name: &str, _: JsonObject) -> Result<ToolReply> {
        Ok(ToolReply {
            text: json!({"tool": name, "answer": "18 degrees"}).to_string(),
            is_error: false,
        })
    }
}

/// The least the same run needs: each turn's stream read, its calls made, the results added.
async fn plain_loop(model: &ScriptedModel, tools: &InstantTools, question: &ChatMessage) {
    let offered = tools.discover("weather", 5).await.expect("discover");
    let mut messages = vec![question.clone()];
    loop {
        let request = ChatRequest {
            model: "scripted".into(),
            messages: messages.clone(),
            tools: offered.clone(),
            ..ChatRequest::default()
        };
        let mut stream = model.chat_stream(request).await.expect("stream");
        let mut calls = Vec::new();
        while let Some(event) = stream.next().await {
            if let ChatEvent::ToolCallStart { id, name, .. } = event.expect("event") {
                calls.push((id, name));
            }
        }
        if calls.is_empty() {
            return;
        }
        for (id, name) in calls {
            let reply = tools.call(&name, JsonObject::new()).await.expect("call");
            messages.push(ChatMessage::tool_result(id, reply.text));
        }
    }
}

fn agent_loop(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let question = ChatMessage::text(
        Role::User,
        "What is the weather in Paris and the time in Tokyo?",
    );
    let agent = Agent::new(Arc::new(ScriptedModel), "scripted");
    let tools: Arc<dyn ToolSource> = Arc::new(InstantTools);

    let mut group = c.benchmark_group("agent_run_3_turns");
    group.throughput(Throughput::Elements(TURNS));
    group.bench_function("agent_loop", |b| {
        b.to_async(&runtime).iter(|| async {
            let events = agent
                .run(vec![question.clone()], tools.clone())
                .count()
                .await;
            assert!(events > 10);
        })
    });
    group.bench_function("plain_loop_same_turns", |b| {
        b.to_async(&runtime)
            .iter(|| plain_loop(&ScriptedModel, &InstantTools, &question))
    });
    group.finish();
}

criterion_group!(benches, agent_loop);
criterion_main!(benches);
