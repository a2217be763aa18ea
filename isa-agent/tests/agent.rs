//! The agent loop against a real MCP server (isa's, over Streamable HTTP, with discovery) and a
//! scripted model in the same process that plays back its turns and keeps what it was asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use isa_agent::{Agent, AgentEvent, Limits, McpTools, ToolSource};
use isa_core::{
    Capabilities, ChatEvent, ChatMessage, ChatRequest, ChatStream, Error, FinishReason,
    ModelProvider, Result, Role, ToolOutput, ToolSpec, Usage, async_trait,
    mcp::{McpConfig, McpServer},
    tool_fn,
};
use isa_tools::select::LocalSelector;
use serde_json::json;

/// One turn of the script.
#[derive(Clone)]
enum Turn {
    /// These events, then the end of the stream.
    Say(Vec<ChatEvent>),
    /// A stream that never ends.
    Hang,
}

/// Sets its flag when dropped: a stream that was abandoned.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Plays back its turns (the last one again when they run out) and keeps every request.
#[derive(Default)]
struct Scripted {
    turns: Mutex<VecDeque<Turn>>,
    asked: Mutex<Vec<ChatRequest>>,
    hang_dropped: Arc<AtomicBool>,
}

impl Scripted {
    fn new(turns: Vec<Turn>) -> Arc<Self> {
        Arc::new(Scripted {
            turns: Mutex::new(turns.into()),
            ..Default::default()
        })
    }

    fn asked(&self) -> Vec<ChatRequest> {
        self.asked.lock().unwrap().clone()
    }
}

#[async_trait]
impl ModelProvider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            chat: true,
            tools: true,
            ..Default::default()
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        self.asked.lock().unwrap().push(request);
        let turn = {
            let mut turns = self.turns.lock().unwrap();
            if turns.len() > 1 {
                turns.pop_front()
            } else {
                turns.front().cloned()
            }
        };
        Ok(match turn.expect("a scripted turn") {
            Turn::Say(events) => Box::pin(futures::stream::iter(events.into_iter().map(Ok))),
            Turn::Hang => {
                let guard = Dropped(self.hang_dropped.clone());
                Box::pin(futures::stream::unfold(guard, |guard| async move {
                    futures::future::pending::<()>().await;
                    Some((
                        Ok(ChatEvent::TextDelta {
                            text: String::new(),
                        }),
                        guard,
                    ))
                }))
            }
        })
    }
}

fn answer(text: &str) -> Turn {
    Turn::Say(vec![
        ChatEvent::TextDelta { text: text.into() },
        ChatEvent::Usage {
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
            },
        },
        ChatEvent::Finish {
            reason: FinishReason::Stop,
        },
    ])
}

/// A turn calling `calls` (name, arguments as JSON text), their arguments in two pieces each.
fn call(calls: &[(&str, &str)]) -> Turn {
    let mut events = vec![ChatEvent::TextDelta {
        text: "Checking.".into(),
    }];
    for (index, (name, arguments)) in calls.iter().enumerate() {
        let index = index as u32;
        events.push(ChatEvent::ToolCallStart {
            index,
            id: format!("call_{index}"),
            name: (*name).into(),
        });
        let (a, b) = arguments.split_at(arguments.len() / 2);
        for piece in [a, b] {
            events.push(ChatEvent::ToolCallDelta {
                index,
                arguments: piece.into(),
            });
        }
    }
    events.push(ChatEvent::Finish {
        reason: FinishReason::ToolCalls,
    });
    Turn::Say(events)
}

/// When each slow tool call started and ended.
type Spans = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// An MCP server with weather and time tools (each taking 200 ms), a failing tool, a slow one,
/// a verbose one and some unrelated ones; its `/mcp` URL.
async fn mcp_server(spans: Spans) -> String {
    let server = McpServer::builder(McpConfig::default())
        .selector(Arc::new(LocalSelector::lexical()))
        .build();
    for (name, description) in [
        (
            "get_weather",
            "Current weather of a city: temperature and sky",
        ),
        ("get_time", "Current time in a time zone"),
    ] {
        let spans = spans.clone();
        let spec = ToolSpec::new(name, description);
        server
            .add_tool(tool_fn(spec, move |args, _| {
                let spans = spans.clone();
                async move {
                    let started = Instant::now();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    spans.lock().unwrap().push((started, Instant::now()));
                    Ok(ToolOutput::json(json!({"asked": args})))
                }
            }))
            .await
            .unwrap();
    }
    let tools = [
        (
            "weather_alerts_broken",
            "Weather alerts for a city (currently failing)",
        ),
        (
            "weather_history_slow",
            "Weather history of a city, very slow",
        ),
        ("weather_report_verbose", "A long weather report for a city"),
        ("translate_text", "Translate text between languages"),
        ("send_email", "Send an email to someone"),
    ];
    for (name, description) in tools {
        let spec = ToolSpec::new(name, description);
        server
            .add_tool(tool_fn(spec, move |_, _| async move {
                Ok(match name {
                    "weather_alerts_broken" => ToolOutput::error("the alerts feed is down"),
                    "weather_history_slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        ToolOutput::text("late")
                    }
                    "weather_report_verbose" => ToolOutput::text("w".repeat(50_000)),
                    _ => ToolOutput::text("ok"),
                })
            }))
            .await
            .unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, server.router()).await });
    url
}

async fn tools(spans: Spans) -> Arc<dyn ToolSource> {
    let url = mcp_server(spans).await;
    Arc::new(McpTools::connect(&url, None).await.unwrap())
}

fn ask(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::text(Role::User, text)]
}

async fn events_of(agent: &Agent, tools: Arc<dyn ToolSource>, text: &str) -> Vec<AgentEvent> {
    agent.run(ask(text), tools).collect().await
}

/// The text of the tool messages the model was given in its request number `n`.
fn tool_results(model: &Scripted, n: usize) -> Vec<String> {
    model.asked()[n]
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(ChatMessage::text_content)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_discovers_tools_calls_them_at_once_and_answers() {
    let spans = Spans::default();
    let model = Scripted::new(vec![
        call(&[
            ("get_weather", r#"{"city":"Paris"}"#),
            ("get_time", r#"{"zone":"Asia/Tokyo"}"#),
        ]),
        answer("Sunny in Paris; 09:00 in Tokyo."),
    ]);
    let agent = Agent::new(model.clone(), "scripted-model").with_system_prompt("Be brief.");
    let events = events_of(
        &agent,
        tools(spans.clone()).await,
        "What is the weather in Paris and the time in Tokyo?",
    )
    .await;

    let AgentEvent::ToolsOffered { names } = &events[0] else {
        panic!("{events:?}")
    };
    assert!(
        names.contains(&"get_weather".to_owned()) && names.contains(&"get_time".to_owned()),
        "{names:?}"
    );
    assert!(!names.contains(&"discover_tools".to_owned()));
    assert!(names.len() <= 5, "only the tools that fit: {names:?}");
    let offered: Vec<String> = model.asked()[0]
        .tools
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(&offered, names, "the model is offered what was discovered");
    assert_eq!(model.asked()[0].messages[0].text_content(), "Be brief.");
    assert_eq!(model.asked()[0].model, "scripted-model");

    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2);
    assert!(
        spans[0].0 < spans[1].1 && spans[1].0 < spans[0].1,
        "the two calls of one turn overlap"
    );
    let results = tool_results(&model, 1);
    assert_eq!(results.len(), 2);
    assert!(results[0].contains("Paris"), "{results:?}");
    assert!(results[1].contains("Asia/Tokyo"), "{results:?}");
    let asked_again = &model.asked()[1].messages;
    let assistant = asked_again
        .iter()
        .find(|m| m.role == Role::Assistant)
        .unwrap();
    assert_eq!(assistant.tool_calls.len(), 2);
    assert_eq!(assistant.tool_calls[0].arguments["city"], "Paris");

    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            AgentEvent::ToolsOffered { .. } => "offered",
            AgentEvent::TurnStarted { .. } => "turn",
            AgentEvent::TextDelta { .. } => "text",
            AgentEvent::Message(m) if m.role == Role::Tool => "tool message",
            AgentEvent::Message(_) => "assistant message",
            AgentEvent::ToolCallStarted { .. } => "call",
            AgentEvent::ToolCallFinished { .. } => "called",
            AgentEvent::Finished(_) => "finished",
            AgentEvent::Failed { .. } => "failed",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "offered",
            "turn",
            "text",
            "assistant message",
            "call",
            "call",
            "called",
            "called",
            "tool message",
            "tool message",
            "turn",
            "text",
            "assistant message",
            "finished"
        ]
    );
    let AgentEvent::Finished(summary) = events.last().unwrap() else {
        panic!()
    };
    assert_eq!(summary.answer, "Sunny in Paris; 09:00 in Tokyo.");
    assert_eq!((summary.model_calls, summary.tool_calls), (2, 2));
    assert_eq!(summary.usage.output_tokens, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_slow_verbose_and_unknown_tools_are_results_the_model_reads() {
    let model = Scripted::new(vec![
        call(&[
            ("weather_alerts_broken", "{}"),
            ("weather_history_slow", "{}"),
            ("weather_report_verbose", "{}"),
            ("format_disk", "{}"),
        ]),
        answer("done"),
    ]);
    let agent = Agent::new(model.clone(), "m").with_limits(Limits {
        tool_deadline: Duration::from_millis(300),
        max_tool_result_chars: 100,
        tools_offered: 10,
        ..Limits::default()
    });
    let started = Instant::now();
    let events = events_of(
        &agent,
        tools(Spans::default()).await,
        "weather alerts history report",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow tool did not hold the run"
    );
    assert!(
        matches!(events.last(), Some(AgentEvent::Finished(_))),
        "{events:?}"
    );
    let results = tool_results(&model, 1);
    assert!(
        results[0].starts_with("Error:") && results[0].contains("alerts feed is down"),
        "{results:?}"
    );
    assert!(
        results[1].starts_with("Error:") && results[1].contains("did not answer"),
        "{results:?}"
    );
    assert!(results[2].starts_with(&"w".repeat(100)), "{results:?}");
    assert!(
        results[2].contains("the result had 50000 characters"),
        "{results:?}"
    );
    assert!(results[2].chars().count() < 200);
    assert!(
        results[3].contains("no tool \"format_disk\""),
        "{results:?}"
    );
    // Calls end in the order they finish, not the order they were asked for.
    let mut errors: Vec<(String, bool)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCallFinished { name, is_error, .. } => Some((name.clone(), *is_error)),
            _ => None,
        })
        .collect();
    errors.sort();
    let expected = [
        ("format_disk", true),
        ("weather_alerts_broken", true),
        ("weather_history_slow", true),
        ("weather_report_verbose", false),
    ];
    assert_eq!(errors, expected.map(|(name, e)| (name.to_owned(), e)));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_turn_limit_and_the_run_deadline_stop_a_run() {
    let looping = Scripted::new(vec![call(&[("get_time", "{}")])]);
    let agent = Agent::new(looping.clone(), "m").with_limits(Limits {
        max_turns: 3,
        ..Limits::default()
    });
    let events = events_of(&agent, tools(Spans::default()).await, "what time is it").await;
    let Some(AgentEvent::Failed { error, summary }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(error.to_string().contains("turn limit (3)"), "{error}");
    assert_eq!((summary.model_calls, summary.tool_calls), (3, 3));
    assert_eq!(looping.asked().len(), 3);

    let hanging = Scripted::new(vec![Turn::Hang]);
    let agent = Agent::new(hanging.clone(), "m").with_limits(Limits {
        run_deadline: Duration::from_millis(300),
        ..Limits::default()
    });
    let events = events_of(&agent, tools(Spans::default()).await, "what time is it").await;
    assert!(
        matches!(
            events.last(),
            Some(AgentEvent::Failed {
                error: Error::Timeout(_),
                ..
            })
        ),
        "{events:?}"
    );
    assert!(
        hanging.hang_dropped.load(Ordering::SeqCst),
        "the model's stream was dropped"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_run_stops_the_model_request() {
    let model = Scripted::new(vec![Turn::Hang]);
    let agent = Agent::new(model.clone(), "m");
    let mut run = agent.run(ask("what time is it"), tools(Spans::default()).await);
    while let Some(event) = run.next().await {
        if matches!(event, AgentEvent::TurnStarted { .. }) {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while model.asked().is_empty() {
        assert!(Instant::now() < deadline, "the model was asked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!model.hang_dropped.load(Ordering::SeqCst));
    drop(run);
    while !model.hang_dropped.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the model's stream was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conversation_without_a_user_message_is_refused() {
    let model = Scripted::new(vec![answer("x")]);
    let agent = Agent::new(model.clone(), "m");
    let events: Vec<AgentEvent> = agent
        .run(
            vec![ChatMessage::text(Role::Assistant, "hello")],
            tools(Spans::default()).await,
        )
        .collect()
        .await;
    assert!(
        matches!(
            events.as_slice(),
            [AgentEvent::Failed {
                error: Error::InvalidInput(_),
                ..
            }]
        ),
        "{events:?}"
    );
    assert!(model.asked().is_empty());
}
