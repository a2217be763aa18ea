//! The three services of a host, each built as its binary builds it, over one database: the
//! model service (its providers a local server playing scripted models), `isa-mcp serve` with
//! its built-in tools, and the agent service in front of both.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../model/tests/common/mod.rs"]
pub mod model;

use std::sync::Arc;

use clap::Parser;
use isa_agent_server::{App, Settings};
use isa_auth::ApiKeys;
use isa_core::{CreditLedger, UserId, UserStore};
use isa_storage::db::Database;
use serde_json::Value;

pub use model::mock;

/// A user of the house: their id and API key.
#[derive(Clone)]
pub struct Caller {
    pub user: UserId,
    pub key: String,
}

pub struct House {
    /// The agent service's base URL.
    pub agent: String,
    /// The MCP endpoint.
    pub mcp: String,
    pub model: model::Served,
    /// The user with credits (the model service's own test user).
    pub alice: Caller,
    /// Another user with credits.
    pub bob: Caller,
    /// An administrator.
    pub admin: Caller,
    pub db: Database,
    pub db_url: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Arguments of `isa-agent` for this house, with `extra` after them.
pub fn agent_settings(model_url: &str, mcp_url: &str, db_url: &str, extra: &[&str]) -> Settings {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }
    let mut args = vec![
        "isa-agent",
        "--bind",
        "127.0.0.1:0",
        "--model-url",
        model_url,
        "--mcp-url",
        mcp_url,
        "--database-url",
        db_url,
        "--tool-call-credits",
        "100",
        "--key-cache-seconds",
        "0",
    ];
    if !extra.contains(&"--model") {
        args.extend(["--model", "files-agent"]);
    }
    args.extend_from_slice(extra);
    Cli::parse_from(args).settings
}

impl House {
    /// The house on SQLite in a temporary directory, the agent started with `extra` flags.
    pub async fn start(extra: &[&str]) -> House {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("isa.db").display());
        House::start_on(dir, &db_url, extra).await
    }

    pub async fn start_on(dir: tempfile::TempDir, db_url: &str, extra: &[&str]) -> House {
        let model = model::serve(db_url, 1_000_000).await;
        let db = model.db.clone();
        let mcp = mcp_server(db_url, dir.path()).await;
        let house_agent =
            House::agent_on(&format!("{}/api/v1", model.base), &mcp, db_url, extra).await;
        let alice = Caller {
            user: model.user.clone(),
            key: model.key.clone(),
        };
        let bob = caller(&db, "bob", 1_000_000, vec![]).await;
        let admin = caller(&db, "admin", 0, vec!["admin".into()]).await;
        House {
            agent: house_agent,
            mcp,
            model,
            alice,
            bob,
            admin,
            db,
            db_url: db_url.to_owned(),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// Another agent service over the same parts, with other flags; its base URL.
    pub async fn agent_on(model_url: &str, mcp_url: &str, db_url: &str, extra: &[&str]) -> String {
        let app = App::build(agent_settings(model_url, mcp_url, db_url, extra))
            .await
            .unwrap();
        mock::serve(app.router).await
    }

    /// `POST /api/chat` as `caller`, the answer's status and its SSE items (`[DONE]` as the
    /// string "[DONE]").
    pub async fn chat(&self, caller: &Caller, query: &str, body: Value) -> (u16, Vec<Value>) {
        self.chat_at(&self.agent, caller, query, body).await
    }

    pub async fn chat_at(
        &self,
        base: &str,
        caller: &Caller,
        query: &str,
        body: Value,
    ) -> (u16, Vec<Value>) {
        let response = self
            .http
            .post(format!("{base}/api/chat{query}"))
            .bearer_auth(&caller.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        House::read_chat(response).await
    }

    /// Starts `POST /api/chat{query}` as `caller` and answers as soon as the headers arrive:
    /// the body streams on.
    pub async fn start_chat(&self, caller: &Caller, query: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/chat{query}", self.agent))
            .bearer_auth(&caller.key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A chat's status and SSE items (or its error envelope).
    pub async fn read_chat(response: reqwest::Response) -> (u16, Vec<Value>) {
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        if status != 200 {
            return (
                status,
                vec![serde_json::from_str(&text).unwrap_or(Value::String(text))],
            );
        }
        (status, sse_items(&text))
    }

    pub async fn get(&self, caller: &Caller, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.agent))
            .bearer_auth(&caller.key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, caller: &Caller, path: &str) -> u16 {
        self.http
            .delete(format!("{}{path}", self.agent))
            .bearer_auth(&caller.key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `user`'s files, oldest first.
    pub async fn files_of(&self, user: &UserId) -> Vec<isa_core::FileRecord> {
        use isa_core::FileIndex;
        self.db.list(user, &Default::default()).await.unwrap().files
    }

    pub async fn balance(&self, user: &UserId) -> i64 {
        self.db.user(user).await.unwrap().map_or(0, |u| u.credits)
    }

    /// Credits charged under request ids that begin with `prefix`, once the model service's
    /// charges (written just after a stream ends) have landed: waits until two reads agree.
    pub async fn charged(&self, user: &UserId, prefix: &str) -> i64 {
        let mut last = -1;
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now: i64 = self
                .db
                .history(user, None, 1000)
                .await
                .unwrap()
                .iter()
                .filter(|t| t.request_id.starts_with(prefix) && t.amount < 0)
                .map(|t| -t.amount)
                .sum();
            if now == last {
                return now;
            }
            last = now;
        }
        last
    }
}

/// The items of an SSE body.
pub fn sse_items(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(|data| match data {
            "[DONE]" => Value::String("[DONE]".into()),
            json => serde_json::from_str(json).unwrap(),
        })
        .collect()
}

/// A user with an API key (and `scopes`) and `credits`.
pub async fn caller(db: &Database, name: &str, credits: i64, scopes: Vec<String>) -> Caller {
    let user = UserId::new(format!("{name}-{}", model::uuid_like())).unwrap();
    let (key, _) = ApiKeys::new(Arc::new(db.clone()))
        .issue(&user, "test", scopes)
        .await
        .unwrap();
    db.ensure_user(&user, None, 0).await.unwrap();
    if credits > 0 {
        db.grant(&user, "test-grant", credits, "test")
            .await
            .unwrap();
    }
    Caller { user, key }
}

/// `isa-mcp serve` built as the binary builds it (credentials required, files on local disk in
/// `dir`) over the database at `db_url`, with `extra` flags.
pub async fn mcp_app(
    db_url: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> isa_mcp_server::app::App {
    let data_dir = dir.join("mcp");
    let mut args = vec![
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--database-url",
        db_url,
        "--require-auth",
        "always",
        "--supabase-jwt-secret",
        "a-secret-of-at-least-thirty-two-bytes!!",
        "--chromium",
        "/nonexistent/chromium",
    ];
    args.extend_from_slice(extra);
    let settings = isa_mcp_server::settings::Settings::parse_from(args).unwrap();
    isa_mcp_server::app::App::build(settings).await.unwrap()
}

/// `isa-mcp serve`'s MCP endpoint (see [`mcp_app`]).
pub async fn mcp_server(db_url: &str, dir: &std::path::Path) -> String {
    let app = mcp_app(db_url, dir, &[]).await;
    format!("{}/mcp", mock::serve(app.mcp_router).await)
}
