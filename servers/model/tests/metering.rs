//! Metering against the real database (SQLite, and PostgreSQL when configured): a charged
//! request is in the ledger once and in the events once, with its tokens and cost; a replayed
//! request id is not charged again; a spent balance is refused before any provider is asked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{database_urls, serve};
use isa_core::{CreditLedger, EventQuery, EventStore};
use serde_json::{Value, json};

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// 12 tokens in at $1/M and 5 out at $2/M: 22 micro-dollars, 22 credits at a credit a micro-dollar.
const CHAT_CREDITS: i64 = 22;

#[tokio::test(flavor = "multi_thread")]
async fn a_charged_request_is_in_the_ledger_and_the_events_once_and_a_replay_is_not_charged_again()
{
    let dir = tempfile::tempdir().unwrap();
    for url in database_urls(dir.path()) {
        let s = serve(&url, 1000).await;
        let request_id = format!("req-{}", common::uuid_like());
        let response = s
            .post(
                "/api/v1/chat/completions",
                Some(&request_id),
                &ask("priced"),
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-request-id"], request_id.as_str());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["billing"]["credits"], CHAT_CREDITS, "{body}");
        assert!((body["billing"]["cost_usd"].as_f64().unwrap() - 22e-6).abs() < 1e-12);
        assert_eq!(s.balance().await, 1000 - CHAT_CREDITS, "{url}");

        let again = s
            .post(
                "/api/v1/chat/completions",
                Some(&request_id),
                &ask("priced"),
            )
            .await;
        assert_eq!(again.status(), 200, "a replay is answered");
        assert_eq!(
            s.balance().await,
            1000 - CHAT_CREDITS,
            "{url}: a replay is not charged again"
        );

        let charges: Vec<_> =
            s.db.history(&s.user, None, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|t| t.request_id == request_id)
                .collect();
        assert_eq!(charges.len(), 1, "{url}: {charges:?}");
        assert_eq!(
            (
                charges[0].amount,
                charges[0].operation.as_str(),
                charges[0].units
            ),
            (-CHAT_CREDITS, "model.chat", Some(17))
        );

        s.app.events.flush().await.unwrap();
        let filter = EventQuery {
            kind: Some("model.usage".into()),
            user: Some(s.user.clone()),
            limit: 100,
            ..Default::default()
        };
        let events = s.db.query(&filter).await.unwrap();
        let events: Vec<&Value> = events
            .iter()
            .map(|e| &e.payload)
            .filter(|p| p["request_id"] == request_id.as_str())
            .collect();
        assert_eq!(events.len(), 2, "{url}: one event per request");
        let first = events.iter().find(|p| p["replayed"] == false).unwrap();
        assert_eq!(
            (
                first["input_tokens"].as_u64(),
                first["output_tokens"].as_u64()
            ),
            (Some(12), Some(5))
        );
        assert_eq!(
            (first["charged"].as_i64(), first["deployment"].as_str()),
            (Some(CHAT_CREDITS), Some("openai/plain"))
        );
        let replay = events.iter().find(|p| p["replayed"] == true).unwrap();
        assert_eq!(replay["charged"], 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spent_balance_is_refused_before_the_provider_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    for url in database_urls(dir.path()) {
        let s = serve(&url, 0).await;
        let response = s
            .post("/api/v1/chat/completions", None, &ask("priced"))
            .await;
        assert_eq!(response.status(), 402, "{url}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "insufficient_credits");
        assert_eq!(s.mock.attempts("plain"), 0, "no provider was paid for");
        let images = s
            .post(
                "/api/v1/images/generations",
                None,
                &json!({"model": "gpt-image-1", "prompt": "fox"}),
            )
            .await;
        assert_eq!(images.status(), 402);

        // A model that costs nothing needs no credits.
        let free = s.post("/api/v1/chat/completions", None, &ask("free")).await;
        assert_eq!(free.status(), 200, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_charged_when_they_end_and_what_a_broken_stream_produced_is_charged_too() {
    let dir = tempfile::tempdir().unwrap();
    for url in database_urls(dir.path()) {
        let s = serve(&url, 1000).await;
        let mut body = ask("priced-tools");
        body["stream"] = json!(true);
        let response = s
            .post("/api/v1/chat/completions", Some("stream-1"), &body)
            .await;
        let text = response.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while s.balance().await == 1000 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url}: the stream was not charged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            s.balance().await,
            1000 - CHAT_CREDITS,
            "{url}: the provider's usage was charged"
        );

        // The provider fails after "Hel": no usage from it, so the text is counted: "hello" is
        // 2 tokens in ($2e-6), "Hel" 1 token out ($2e-6).
        let mut body = ask("midstream");
        body["stream"] = json!(true);
        let text = s
            .post("/api/v1/chat/completions", None, &body)
            .await
            .text()
            .await
            .unwrap();
        assert!(text.contains("\"error\""), "{text}");
        let before = 1000 - CHAT_CREDITS;
        while s.balance().await == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url}: the broken stream was not charged"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.balance().await, before - 4, "{url}");
    }
}
