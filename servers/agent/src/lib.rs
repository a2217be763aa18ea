//! The agent service's server: settings, the database (users, credits, API keys, sessions,
//! events), the model service and the MCP server it reaches for each caller, and the router of
//! [`isa_agent::service`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use isa_agent::{
    Limits, McpConnector,
    service::{AgentProfile, Components, ModelForCaller, router},
};
use isa_auth::{ApiKeys, IssuerSettings};
use isa_core::{
    ACT_FOR_HEADER, Error, EventSink, HealthCheck, ModelProvider, Result, UserId,
    http::{Health, listen, serve},
};
use isa_models::providers::OpenAi;
use isa_storage::{
    db::{Database, default_data_dir},
    events::{BatchingConfig, BatchingSink},
};
use tokio_util::sync::CancellationToken;

/// What the agent is told first when `ISA_AGENT_SYSTEM_PROMPT` says nothing else.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are isa's assistant. Use the tools offered when they help the user, \
    say what you did with them, and answer plainly. When a tool fails, say so rather than guess.";

/// `isa-agent`'s settings: arguments or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "ISA_AGENT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// The model service's OpenAI-compatible API, reached with each caller's credential.
    #[arg(
        long,
        env = "ISA_MODEL_URL",
        default_value = "http://127.0.0.1:8082/api/v1"
    )]
    pub model_url: String,
    /// The model the agent asks (a name or alias of the model service).
    #[arg(long, env = "ISA_AGENT_MODEL", default_value = "gpt-4.1-mini")]
    pub model: String,
    /// The MCP server's endpoint, reached with each caller's credential.
    #[arg(long, env = "ISA_MCP_URL", default_value = "http://127.0.0.1:8081/mcp")]
    pub mcp_url: String,
    /// What the agent tells the model first.
    #[arg(long, env = "ISA_AGENT_SYSTEM_PROMPT", default_value = DEFAULT_SYSTEM_PROMPT)]
    pub system_prompt: String,
    /// Model turns of a run at most.
    #[arg(long, env = "ISA_AGENT_MAX_TURNS", default_value_t = 10)]
    pub max_turns: u32,
    /// Seconds a run may take at most.
    #[arg(long, env = "ISA_AGENT_RUN_SECONDS", default_value_t = 120)]
    pub run_seconds: u64,
    /// Seconds a tool call may take at most.
    #[arg(long, env = "ISA_AGENT_TOOL_SECONDS", default_value_t = 30)]
    pub tool_seconds: u64,
    /// Characters of a tool result given to the model at most.
    #[arg(
        long,
        env = "ISA_AGENT_MAX_TOOL_RESULT_CHARS",
        default_value_t = 16_000
    )]
    pub max_tool_result_chars: usize,
    /// Tools discovered and offered for a run at most.
    #[arg(long, env = "ISA_AGENT_TOOLS_OFFERED", default_value_t = 5)]
    pub tools_offered: usize,
    /// Characters of a session's earlier messages shown to the model at most (about a quarter
    /// as many tokens): the newest whole exchanges that fit.
    #[arg(long, env = "ISA_AGENT_CONTEXT_CHARS", default_value_t = 48_000)]
    pub context_chars: usize,
    /// Credits charged for each tool call that answers (a credit is a micro-dollar); the model
    /// service charges model calls itself.
    #[arg(long, env = "ISA_AGENT_TOOL_CALL_CREDITS", default_value_t = 100)]
    pub tool_call_credits: i64,
    /// Runs at once; more are refused with 503 at once.
    #[arg(long, env = "ISA_AGENT_CONCURRENCY", default_value_t = 256)]
    pub max_concurrent_runs: usize,
    /// The database: `postgres://…` or `sqlite://…`; a SQLite file in the data directory when
    /// not set (shared with the other servers on this machine).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Where the SQLite database lives by default.
    #[arg(long, env = "ISA_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Credits a user starts with.
    #[arg(long, env = "ISA_INITIAL_CREDITS", default_value_t = 0)]
    pub initial_credits: i64,
    /// How long a verified API key is trusted before it is read again (0: every request).
    #[arg(long, env = "ISA_KEY_CACHE_SECONDS", default_value_t = 5)]
    pub key_cache_seconds: u64,
    /// This service's public URL (named in `WWW-Authenticate`).
    #[arg(long, env = "ISA_AGENT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Token issuers (Supabase, Auth0); API keys are accepted always.
    #[command(flatten)]
    pub issuers: IssuerSettings,
}

impl Settings {
    /// The limits of the agent's runs.
    pub fn limits(&self) -> Limits {
        Limits {
            max_turns: self.max_turns,
            run_deadline: Duration::from_secs(self.run_seconds),
            tool_deadline: Duration::from_secs(self.tool_seconds),
            max_tool_result_chars: self.max_tool_result_chars,
            tools_offered: self.tools_offered,
        }
    }
}

/// A service this one needs, ready when its `/health` answers 200; reported, not required (the
/// agent stays up, and says which part is missing, while the other service restarts).
struct Neighbour {
    name: &'static str,
    health_url: String,
    client: reqwest::Client,
}

#[isa_core::async_trait]
impl HealthCheck for Neighbour {
    fn name(&self) -> &str {
        self.name
    }

    fn required(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<()> {
        let response = self
            .client
            .get(&self.health_url)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("{}: {e}", self.name)))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "{} answered {}",
                self.name,
                response.status()
            )))
        }
    }
}

/// A URL's origin (`http://host:port`), where a service answers `/health`.
fn origin(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{url} is not a URL"))?;
    Ok(parsed.origin().ascii_serialization())
}

/// The service, built and ready to serve.
pub struct App {
    /// The settings.
    pub settings: Settings,
    /// The router.
    pub router: Router,
    /// Where run events go.
    pub events: Arc<dyn EventSink>,
}

impl App {
    /// Opens the database and builds the router. Binds no socket and reaches neither the model
    /// service nor the MCP server until a request needs them.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let db = Database::open(&settings.data_dir, settings.database_url.as_deref())
            .await
            .context("opening the database (DATABASE_URL)")?;
        let events: Arc<dyn EventSink> = Arc::new(BatchingSink::spawn(
            Arc::new(db.clone()),
            BatchingConfig::default(),
        ));
        let resource = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}/api", settings.bind));
        let keys = ApiKeys::new(Arc::new(db.clone()))
            .with_cache(Duration::from_secs(settings.key_cache_seconds));
        let auth = settings
            .issuers
            .authenticator(&resource, keys, events.clone())?;

        let model_service = OpenAi::compatible("model service", &settings.model_url, None)?;
        let model_for: ModelForCaller = Arc::new(move |credential: &str, user: Option<&UserId>| {
            let mut provider = model_service.with_api_key(Some(credential.to_owned()));
            if let Some(user) = user {
                provider = provider.with_header(ACT_FOR_HEADER, user.as_str())?;
            }
            Ok(Arc::new(provider) as Arc<dyn ModelProvider>)
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let neighbour = |name, url: &str| -> anyhow::Result<Arc<dyn HealthCheck>> {
            Ok(Arc::new(Neighbour {
                name,
                health_url: format!("{}/health", origin(url)?),
                client: client.clone(),
            }))
        };
        let health = Health::new(vec![
            Arc::new(db.clone()),
            neighbour("model_service", &settings.model_url)?,
            neighbour("mcp_server", &settings.mcp_url)?,
        ]);
        let components = Components {
            profile: AgentProfile {
                name: "isa".into(),
                model: settings.model.clone(),
                system_prompt: Some(settings.system_prompt.clone())
                    .filter(|p| !p.trim().is_empty()),
                limits: settings.limits(),
                context_chars: settings.context_chars,
            },
            model_for,
            mcp: McpConnector::new(&settings.mcp_url)?,
            users: Arc::new(db.clone()),
            ledger: Arc::new(db.clone()),
            sessions: Arc::new(db),
            events: events.clone(),
            initial_credits: settings.initial_credits,
            tool_call_credits: settings.tool_call_credits,
            max_concurrent_runs: settings.max_concurrent_runs,
            max_body_bytes: 256 * 1024,
        };
        let router = router(components, auth, health);
        Ok(App {
            settings,
            router,
            events,
        })
    }

    /// Serves until `stop`, then writes the events still buffered.
    pub async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let listener = listen(self.settings.bind).await?;
        tracing::info!(address = %self.settings.bind, model = %self.settings.model, mcp = %self.settings.mcp_url, "agent service listening");
        serve(listener, self.router, stop.cancelled_owned()).await?;
        self.events.close().await?;
        Ok(())
    }
}
