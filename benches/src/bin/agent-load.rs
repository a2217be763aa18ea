//! Many agent sessions streaming at once: `SESSIONS` chats to the agent service at the same
//! moment, each read to its `[DONE]`, for `ROUNDS` rounds over the same sessions (so each round
//! reloads a longer session), named `{PREFIX}-{n}` (`load` by default). Prints, per round, how
//! long it took, the runs that ended with an answer, and those that failed (with the first
//! failure).
//!
//! Usage: `agent-load AGENT_URL API_KEY SESSIONS ROUNDS [PREFIX]`

use std::time::Instant;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// One chat, read to its end: whether it ended with an answer, or what went wrong.
async fn chat(client: &reqwest::Client, url: &str, key: &str, session: &str) -> Result<(), String> {
    let body = serde_json::json!({"message": "What time is it?", "session_id": session});
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    let answered = text.contains("\"type\":\"end\"") && !text.contains("\"type\":\"error\"");
    if answered && text.ends_with("data: [DONE]\n\n") {
        Ok(())
    } else {
        Err(text.lines().rev().take(6).collect::<Vec<_>>().join(" | "))
    }
}

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().collect();
    if !(5..=6).contains(&args.len()) {
        return Err("usage: agent-load AGENT_URL API_KEY SESSIONS ROUNDS [PREFIX]".into());
    }
    let prefix = args.get(5).cloned().unwrap_or_else(|| "load".into());
    let url = format!("{}/api/chat", args[1].trim_end_matches('/'));
    let key = args[2].clone();
    let sessions: usize = args[3].parse()?;
    let rounds: usize = args[4].parse()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(sessions)
        .build()?;
    for round in 1..=rounds {
        let started = Instant::now();
        let runs = (0..sessions).map(|i| {
            let (client, url, key, prefix) =
                (client.clone(), url.clone(), key.clone(), prefix.clone());
            let session = format!("{prefix}-{i}");
            tokio::spawn(async move { chat(&client, &url, &key, &session).await })
        });
        let outcomes = futures::future::join_all(runs).await;
        let failures: Vec<String> = outcomes
            .into_iter()
            .filter_map(|o| match o {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(e.to_string()),
            })
            .collect();
        println!(
            "round {round}: {sessions} sessions in {:.2} s, {} answered, {} failed{}",
            started.elapsed().as_secs_f64(),
            sessions - failures.len(),
            failures.len(),
            failures
                .first()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
