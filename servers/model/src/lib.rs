//! The model service's server: settings, the gateway from the model configuration, the
//! database (users, credits, API keys, events), and the router of
//! [`isa_models::service`].

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use isa_auth::{ApiKeys, IssuerSettings};
use isa_core::{
    Embedder, EventSink, HealthCheck, Result,
    http::{Health, listen, serve},
};
use isa_models::{
    OrtEmbedder,
    gateway::{Gateway, GatewayConfig},
    service::{Metering, ServiceLimits, router},
};
use isa_storage::{
    db::{Database, default_data_dir},
    events::{BatchingConfig, BatchingSink},
};
use tokio_util::sync::CancellationToken;

/// The model configuration served when `ISA_MODEL_CONFIG` names none: the providers and models
/// of the deployment isa replaces, each present only when its key is set, and the local
/// embedder.
pub const DEFAULT_CONFIG: &str = include_str!("../models.toml");

/// `isa-model`'s settings: arguments or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "ISA_MODEL_BIND", default_value = "127.0.0.1:8082")]
    pub bind: SocketAddr,
    /// The model configuration (TOML); the embedded default when not set.
    #[arg(long, env = "ISA_MODEL_CONFIG")]
    pub config: Option<PathBuf>,
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
    /// Credits per US dollar of cost (1,000,000: a credit is a micro-dollar).
    #[arg(long, env = "ISA_CREDITS_PER_USD", default_value_t = 1_000_000.0)]
    pub credits_per_usd: f64,
    /// Requests served at once; more are refused with 503 at once.
    #[arg(long, env = "ISA_MODEL_CONCURRENCY", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// How long a verified API key is trusted before it is read again: a revoked key stops
    /// working here within this many seconds (0: read the store on every request).
    #[arg(long, env = "ISA_KEY_CACHE_SECONDS", default_value_t = 5)]
    pub key_cache_seconds: u64,
    /// This service's public URL (named in `WWW-Authenticate`).
    #[arg(long, env = "ISA_MODEL_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Token issuers (Supabase, Auth0); API keys are accepted always.
    #[command(flatten)]
    pub issuers: IssuerSettings,
}

/// Ready when the database answers.
struct DatabaseHealth(Database);

#[isa_core::async_trait]
impl HealthCheck for DatabaseHealth {
    fn name(&self) -> &str {
        "database"
    }
    async fn check(&self) -> Result<()> {
        self.0.ping().await
    }
}

/// The service, built and ready to serve.
pub struct App {
    /// The settings.
    pub settings: Settings,
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The router.
    pub router: Router,
    /// Where usage events go.
    pub events: Arc<dyn EventSink>,
}

impl App {
    /// Reads the model configuration, opens the database, loads the local embedder when the
    /// configuration uses it, and builds the router, with provider keys from the environment.
    /// Binds no socket.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        App::build_with(settings, |var| std::env::var(var).ok()).await
    }

    /// [`App::build`] with provider keys read through `env`.
    pub async fn build_with(
        settings: Settings,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<App> {
        let text = match &settings.config {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the model configuration {}", path.display()))?,
            None => DEFAULT_CONFIG.to_owned(),
        };
        let config = GatewayConfig::from_toml(&text)?;
        let local = if config
            .providers
            .values()
            .any(|p| p.kind == isa_models::gateway::ProviderKind::Local)
        {
            match tokio::task::spawn_blocking(OrtEmbedder::from_env).await? {
                Ok(embedder) => Some(Arc::new(embedder) as Arc<dyn Embedder>),
                Err(e) => {
                    tracing::warn!(error = %e, "the local embedding model did not load; local models are left out");
                    None
                }
            }
        } else {
            None
        };
        let gateway = Arc::new(config.build(env, local)?);
        let names: Vec<&str> = gateway.routes().map(|r| r.name.as_str()).collect();
        tracing::info!(models = ?names, "models served");
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
            .unwrap_or_else(|| format!("http://{}/api/v1", settings.bind));
        let keys = ApiKeys::new(Arc::new(db.clone()))
            .with_cache(Duration::from_secs(settings.key_cache_seconds));
        let auth = settings
            .issuers
            .authenticator(&resource, keys, events.clone())?;
        let metering = Metering {
            credits: Some((Arc::new(db.clone()), Arc::new(db.clone()))),
            initial_credits: settings.initial_credits,
            credits_per_usd: settings.credits_per_usd,
            events: Some(events.clone()),
        };
        let health = Health::new(vec![Arc::new(DatabaseHealth(db))]);
        let limits = ServiceLimits {
            max_concurrent_requests: settings.max_concurrent_requests,
            ..ServiceLimits::default()
        };
        let router = router(
            gateway.clone(),
            metering,
            auth,
            health,
            limits,
            settings.bind.port(),
        );
        Ok(App {
            settings,
            gateway,
            router,
            events,
        })
    }

    /// Serves until `stop`, then writes the events still buffered.
    pub async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let listener = listen(self.settings.bind).await?;
        tracing::info!(address = %self.settings.bind, "model service listening");
        serve(listener, self.router, stop.cancelled_owned()).await?;
        self.events.close().await?;
        Ok(())
    }
}
