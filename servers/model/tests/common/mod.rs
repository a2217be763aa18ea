//! The model server built as `isa-model` builds it (configuration file, database, API keys,
//! metering), serving providers that are local servers speaking their wire formats.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../../isa-models/tests/mock/mod.rs"]
pub mod mock;

use std::{path::PathBuf, sync::Arc};

use isa_auth::ApiKeys;
use isa_core::{CreditLedger, UserId};
use isa_model_server::{App, Settings};
use isa_storage::db::{Database, default_data_dir};
use mock::Mock;
use serde_json::Value;

/// The databases to run against: SQLite always, PostgreSQL when `ISA_TEST_DATABASE_URL` names
/// one (required when `ISA_REQUIRE_SERVICES=1`).
pub fn database_urls(dir: &std::path::Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("isa.db").display())];
    match std::env::var("ISA_TEST_DATABASE_URL") {
        Ok(url) => urls.push(url),
        Err(_) => {
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "ISA_TEST_DATABASE_URL is required"
            );
            eprintln!("PostgreSQL skipped: ISA_TEST_DATABASE_URL is not set");
        }
    }
    urls
}

pub struct Served {
    pub base: String,
    pub key: String,
    pub user: UserId,
    pub db: Database,
    pub app: App,
    pub mock: Mock,
    pub http: reqwest::Client,
}

/// Chat models at the mock OpenAI server, priced at $1 / $2 per million tokens (a request of the
/// scripts, 12 tokens in and 5 out, costs 22 micro-dollars), an unpriced one, and the local
/// embedder.
pub fn config(openai: &str) -> String {
    format!(
        r#"
[providers.openai]
kind = "openai"
base_url = "{openai}/v1"
api_key_env = "TEST_OPENAI_KEY"

[providers.local]
kind = "local"

[[models]]
name = "priced"
kind = "chat"
deployments = [{{ provider = "openai", model = "plain", price = {{ input_per_million = 1.0, output_per_million = 2.0 }} }}]

[[models]]
name = "priced-tools"
kind = "chat"
deployments = [{{ provider = "openai", model = "parallel", price = {{ input_per_million = 1.0, output_per_million = 2.0 }} }}]

[[models]]
name = "agent"
kind = "chat"
deployments = [{{ provider = "openai", model = "agent", price = {{ input_per_million = 1.0, output_per_million = 2.0 }} }}]

[[models]]
name = "files-agent"
kind = "chat"
deployments = [{{ provider = "openai", model = "files-agent", price = {{ input_per_million = 1.0, output_per_million = 2.0 }} }}]

[[models]]
name = "bad-calls"
kind = "chat"
deployments = [{{ provider = "openai", model = "bad-calls", price = {{ input_per_million = 1.0, output_per_million = 2.0 }} }}]

[[models]]
name = "fetch-agent"
kind = "chat"
deployments = [{{ provider = "openai", model = "fetch-agent" }}]

[[models]]
name = "endless"
kind = "chat"
deployments = [{{ provider = "openai", model = "endless" }}]

[[models]]
name = "free"
kind = "chat"
deployments = [{{ provider = "openai", model = "tool" }}]

[[models]]
name = "midstream"
kind = "chat"
deployments = [{{ provider = "openai", model = "midstream-error", price = {{ input_per_million = 1.0, output_per_million = 2.0 }} }}]

[[models]]
name = "text-embedding-3-small"
kind = "embeddings"
deployments = [{{ provider = "openai", model = "text-embedding-3-small", price = {{ input_per_million = 0.02 }} }}]

[[models]]
name = "gpt-image-1"
kind = "images"
deployments = [{{ provider = "openai", model = "gpt-image-1", price = {{ per_image = 0.04 }} }}]

[[models]]
name = "all-MiniLM-L6-v2"
kind = "embeddings"
deployments = [{{ provider = "local", model = "all-MiniLM-L6-v2" }}]
"#
    )
}

/// Serves the model server on a free port over `database_url`, with a user holding `credits`
/// and an API key of theirs.
pub async fn serve(database_url: &str, credits: i64) -> Served {
    let mock = Mock::default();
    let openai = mock::serve(mock::openai(mock.clone())).await;
    let config_file: PathBuf = std::env::temp_dir().join(format!("isa-model-{}.toml", uuid_like()));
    std::fs::write(&config_file, config(&openai)).unwrap();
    let settings = Settings {
        bind: "127.0.0.1:0".parse().unwrap(),
        config: Some(config_file),
        database_url: Some(database_url.to_owned()),
        data_dir: default_data_dir(),
        initial_credits: 0,
        credits_per_usd: 1_000_000.0,
        max_concurrent_requests: 64,
        key_cache_seconds: 5,
        public_url: None,
        issuers: Default::default(),
    };
    let app = App::build_with(settings, |var| {
        (var == "TEST_OPENAI_KEY").then(|| mock::KEY.to_owned())
    })
    .await
    .unwrap();
    let db = Database::connect(database_url).await.unwrap();
    let user = UserId::new(format!("user-{}", uuid_like())).unwrap();
    let (key, _) = ApiKeys::new(Arc::new(db.clone()))
        .issue(&user, "test", vec![])
        .await
        .unwrap();
    if credits > 0 {
        use isa_core::UserStore;
        db.ensure_user(&user, None, 0).await.unwrap();
        db.grant(&user, "test-grant", credits, "test")
            .await
            .unwrap();
    }
    let base = mock::serve(app.router.clone()).await;
    Served {
        base,
        key,
        user,
        db,
        app,
        mock,
        http: reqwest::Client::new(),
    }
}

/// A unique enough name part (tests share the PostgreSQL database).
pub fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

impl Served {
    pub async fn post(
        &self,
        path: &str,
        request_id: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        request.send().await.unwrap()
    }

    pub async fn balance(&self) -> i64 {
        use isa_core::UserStore;
        self.db
            .user(&self.user)
            .await
            .unwrap()
            .map_or(0, |u| u.credits)
    }
}
