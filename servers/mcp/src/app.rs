//! The composition root of `isa-mcp serve`: [`Settings`] → [`App::build`] (the components and
//! their routers) → [`App::serve`]. Tests build the same [`App`] and call its routers in
//! process.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::Router;
use isa_auth::{ApiKeys, Authenticator, Issuers, require_auth};
use isa_core::{
    Embedder, Error, EventSink, EventStore, FileStore, HealthCheck, Result, TextKind, ToolSelector,
    UserStore,
    http::{ServiceSet, listen, name_service, no_route},
    mcp::{McpConfig, McpServer, ServerMode, StateKey, ToolLimits},
};
use isa_files::{FilesConfig, Swept, UserFiles, tools::file_tools};
use isa_models::OrtEmbedder;
use isa_storage::{
    db::Database,
    events::{BatchingConfig, BatchingSink},
    files::{FileStoreHealth, LocalSigner, ObjectFileStore, S3Config, local_signing_key},
};
use isa_tools::{
    browser::{BrowserConfig, ChromiumDriver, browser_tools},
    catalog::CatalogTool,
    clock::current_time,
    gateway::Gateway,
    select::{LocalSelector, Strategy, pgvector::PgVectorSelector},
    web::{Cidr, FetchConfig, SsrfGuard, WebFetch, WebSearch},
};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{agent_handoff::AgentHandoff, events::EventsService, users::UsersService},
    settings::{IndexBackend, Mode, RequireAuth, Settings},
};

/// Opens `DATABASE_URL` when given, else the SQLite file `isa.db` in the data directory.
pub async fn open_database(data_dir: &Path, given: Option<&str>) -> anyhow::Result<Database> {
    Database::open(data_dir, given)
        .await
        .context("opening the database (DATABASE_URL)")
}

/// Creates the data directory if it is missing: on a fresh machine not even `~/.local/share`
/// exists, and SQLite does not create folders.
fn create_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))
}

/// Ready when a query embeds.
struct EmbedderHealth(Option<Arc<OrtEmbedder>>, String);

#[isa_core::async_trait]
impl HealthCheck for EmbedderHealth {
    fn name(&self) -> &str {
        "embedder"
    }
    async fn check(&self) -> Result<()> {
        match &self.0 {
            Some(embedder) => embedder
                .embed_one("health", TextKind::Query)
                .await
                .map(drop),
            None => Err(Error::Unavailable(self.1.clone())),
        }
    }
}

/// The server's components, built from [`Settings`] and ready to serve.
pub struct App {
    /// The settings it was built from.
    pub settings: Settings,
    /// The MCP service with every tool added.
    pub mcp: McpServer,
    /// What the MCP listener serves: MCP, discovery, status, and the credential check when
    /// one is required.
    pub mcp_router: Router,
    /// The user service's router, unless it is `off`.
    pub users: Option<Router>,
    /// The event service's router, unless it is `off`.
    pub events: Option<Router>,
    /// Where every service records its events (tool calls, uploads, API-key use, charges,
    /// and what clients post to the event service): batched into the database.
    pub event_sink: Arc<dyn EventSink>,
    /// Where recorded events are read back from: the database.
    pub event_store: Arc<dyn EventStore>,
    /// Users' files, which the sweeper tidies.
    pub user_files: UserFiles,
    /// The credential check of `/mcp`, when one is required.
    pub mcp_auth: Option<Authenticator>,
}

impl App {
    /// Opens the database, loads the embedder, adds every tool and catalog, and builds the
    /// routers of each service. Binds no socket.
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        // Its signing key and local files live there even when the database is elsewhere.
        create_data_dir(&settings.data_dir)?;
        let db = open_database(&settings.data_dir, settings.database_url.as_deref()).await?;
        let event_sink: Arc<dyn EventSink> = Arc::new(BatchingSink::spawn(
            Arc::new(db.clone()),
            BatchingConfig::default(),
        ));
        let keys = ApiKeys::new(Arc::new(db.clone()));
        // One credential check for every listener: tokens of the configured issuers and the
        // API keys of the user service.
        let issuers = token_issuers(&settings)?;
        let auth = Authenticator::new(
            mcp_resource(&settings),
            issuers.verifier,
            Some(keys.clone()),
        )
        .with_authorization_servers(issuers.authorization_servers)
        .with_events(event_sink.clone());
        let mcp_auth = mcp_auth_required(&settings).then(|| auth.clone());
        let (embedder, embedder_error) = match tokio::task::spawn_blocking(OrtEmbedder::from_env)
            .await?
        {
            Ok(e) => (Some(Arc::new(e)), String::new()),
            Err(e) => {
                tracing::error!(error = %e, "the embedding model did not load: selection is lexical only and /health answers 503");
                (None, format!("the embedding model did not load: {e}"))
            }
        };
        let selector = tool_index(&settings, &db, embedder.clone()).await?;

        let (files, signer) = file_store(&settings)?;
        let user_files = UserFiles::new(
            files.clone(),
            Arc::new(db.clone()),
            FilesConfig {
                max_size: settings.file_max_size,
                url_ttl: Duration::from_secs(settings.file_url_ttl),
            },
        )?
        .with_events(event_sink.clone());
        let mut builder = McpServer::builder(mcp_config(&settings, embedder.is_some()))
            .events(event_sink.clone())
            .health_check(Arc::new(FileStoreHealth(files.clone())))
            .health_check(Arc::new(db.clone()))
            .tasks(Arc::new(db.clone()))
            .selector(selector)
            .health_check(Arc::new(EmbedderHealth(embedder.clone(), embedder_error)));
        if let Some(e) = &embedder {
            builder = builder.embedder(e.clone());
        }
        let gateway = Gateway::new(settings.upstreams.clone());
        for check in gateway.health_checks() {
            builder = builder.health_check(check);
        }
        let server = builder.build();
        gateway.start(&server, Duration::from_secs(10)).await;
        add_tools(&server, &settings, &user_files, Arc::new(db.clone())).await?;

        let mcp_router = match &mcp_auth {
            Some(auth) => server
                .protected_router()
                .layer(axum::middleware::from_fn_with_state(
                    auth.clone(),
                    require_auth,
                ))
                .merge(auth.metadata_router())
                .merge(server.status_router()),
            None => server.router(),
        }
        .fallback(no_route);
        let mcp_router = name_service(mcp_router, "mcp");
        let users = settings
            .users_bind
            .0
            .map(|_| {
                UsersService {
                    users: Arc::new(db.clone()),
                    ledger: Arc::new(db.clone()),
                    checks: vec![Arc::new(db.clone())],
                    files: user_files.clone(),
                    store: files,
                    signer,
                    keys,
                    initial_credits: settings.initial_credits,
                    events: event_sink.clone(),
                    concurrency: settings.api_concurrency,
                }
                .router(auth.clone())
            })
            .map(|router| name_service(router, "users"));
        let events = settings
            .events_bind
            .0
            .map(|_| {
                EventsService {
                    store: Arc::new(db.clone()),
                    sink: event_sink.clone(),
                    checks: vec![Arc::new(db.clone())],
                    concurrency: settings.api_concurrency,
                    handoff: AgentHandoff::spawn(&settings.agent, event_sink.clone()),
                }
                .router(auth)
            })
            .map(|router| name_service(router, "events"));
        Ok(App {
            settings,
            mcp: server,
            mcp_router,
            users,
            events,
            event_sink,
            event_store: Arc::new(db),
            user_files,
            mcp_auth,
        })
    }

    /// Listens on every configured address and serves until `stop` is cancelled; then each
    /// service drains (the event service writes every event it accepted) and every task ends
    /// before this returns.
    pub async fn serve(self, stop: CancellationToken) -> anyhow::Result<()> {
        let settings = &self.settings;
        let mut services = ServiceSet::new(stop.clone());
        let listener = listen(settings.bind).await?;
        let base = format!("http://{}", listener.local_addr()?);
        eprintln!(
            "isa-mcp serving {} tools",
            self.mcp.tool_specs(&Default::default()).len()
        );
        eprintln!("  MCP           {base}/mcp/");
        eprintln!("  discovery     POST {base}/discover   GET {base}/search?q=...");
        eprintln!(
            "  status        {base}/health  {base}/stats  {base}/capabilities  {base}/metrics"
        );
        match &self.mcp_auth {
            Some(auth) => eprintln!(
                "  auth          bearer credential required; metadata at {}",
                auth.metadata_url()
            ),
            None => eprintln!("  auth          none (loopback only)"),
        }
        let mcp = self.mcp.clone();
        let grace = Duration::from_secs(settings.shutdown_grace);
        let stopped = stop.clone().cancelled_owned();
        let router = self.mcp_router;
        services.spawn("mcp", async move {
            mcp.serve(listener, router, stopped, grace).await
        });
        if let (Some(bind), Some(router)) = (settings.users_bind.0, self.users) {
            let listener = listen(bind).await?;
            eprintln!(
                "  users         http://{}/api/users/me  (OpenAPI at /openapi.json)",
                listener.local_addr()?
            );
            services.serve("users", listener, router, async { Ok(()) });
            services.spawn(
                "upload sweeper",
                sweep_abandoned_uploads(self.user_files, stop.clone()),
            );
        }
        if let (Some(bind), Some(router)) = (settings.events_bind.0, self.events) {
            let listener = listen(bind).await?;
            eprintln!(
                "  events        http://{}/api/events  (OpenAPI at /openapi.json)",
                listener.local_addr()?
            );
            services.serve("events", listener, router, async { Ok(()) });
        }
        let served = services.join().await;
        // Every service has stopped: every event they accepted is written before the end.
        let flushed = self.event_sink.close().await;
        served?;
        Ok(flushed?)
    }
}

/// Removes, every hour until `stop`, the direct uploads never completed.
async fn sweep_abandoned_uploads(files: UserFiles, stop: CancellationToken) -> Result<()> {
    let abandoned_after = files.config().abandoned_after();
    let mut every_hour = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = every_hour.tick() => {}
        }
        match files.sweep_abandoned(abandoned_after).await {
            Ok(swept) if swept == Swept::default() => {}
            Ok(Swept {
                uploads,
                stray_objects,
            }) => tracing::info!(uploads, stray_objects, "abandoned direct uploads removed"),
            Err(error) => tracing::warn!(%error, "sweeping abandoned uploads failed"),
        }
    }
}

/// The selector behind discovery, as `--index` asks.
async fn tool_index(
    settings: &Settings,
    db: &Database,
    embedder: Option<Arc<OrtEmbedder>>,
) -> anyhow::Result<Arc<dyn ToolSelector>> {
    let embedder = embedder.map(|e| e as Arc<dyn Embedder>);
    let hybrid = Strategy::Hybrid {
        dense_weight: settings.dense_weight,
    };
    Ok(match (settings.index, embedder) {
        (IndexBackend::Memory, Some(e)) => Arc::new(LocalSelector::with_strategy(hybrid, Some(e))),
        (IndexBackend::Memory, None) => Arc::new(LocalSelector::lexical()),
        (IndexBackend::Pgvector, Some(e)) => {
            let Database::Postgres(pool) = db else {
                anyhow::bail!("--index pgvector needs DATABASE_URL to name a PostgreSQL database");
            };
            let table = &settings.index_table;
            Arc::new(PgVectorSelector::with_strategy(pool.clone(), e, table, hybrid).await?)
        }
        (IndexBackend::Pgvector, None) => {
            anyhow::bail!("--index pgvector needs the embedding model, which did not load")
        }
    })
}

/// The MCP server's configuration; `dense` says whether selection has the embedding model, the
/// scale `--min-relevance` is given in.
fn mcp_config(settings: &Settings, dense: bool) -> McpConfig {
    let mut allowed_hosts = McpConfig::default().allowed_hosts;
    if settings.allowed_hosts.iter().any(|h| h == "*") {
        allowed_hosts.clear();
    } else {
        allowed_hosts.extend(settings.allowed_hosts.iter().cloned());
    }
    McpConfig {
        mode: match settings.mode {
            Mode::Full => ServerMode::Full,
            Mode::Discover => ServerMode::Discover,
        },
        allowed_hosts,
        sessions: !settings.stateless,
        max_concurrent_requests: settings.api_concurrency,
        default_limits: ToolLimits {
            timeout: Duration::from_secs(settings.tool_timeout),
            max_concurrent: settings.tool_concurrency,
        },
        min_relevance: (dense && settings.min_relevance > 0.0).then_some(settings.min_relevance),
        confirmations: settings.confirm_tools.iter().cloned().collect(),
        state_key: match &settings.state_secret {
            Some(secret) => StateKey::from_secret(secret),
            None => StateKey::random(),
        },
        ..McpConfig::default()
    }
}

/// The built-in tools, then every catalog's tools.
async fn add_tools(
    server: &McpServer,
    settings: &Settings,
    user_files: &UserFiles,
    users: Arc<dyn UserStore>,
) -> anyhow::Result<()> {
    let guard = SsrfGuard::allowing(
        settings
            .net_allow
            .iter()
            .map(|range| range.parse::<Cidr>())
            .collect::<Result<Vec<_>>>()?,
    );
    server.add_tool(current_time()).await?;
    server
        .add_tools(file_tools(
            user_files.clone(),
            users,
            settings.initial_credits,
        ))
        .await?;
    server
        .add_tool(Arc::new(WebFetch::new(
            guard.clone(),
            FetchConfig::default(),
        )?))
        .await?;
    if settings.chromium.exists() {
        let driver = ChromiumDriver::new(BrowserConfig {
            chromium: settings.chromium.clone(),
            guard: guard.clone(),
            ..BrowserConfig::default()
        })
        .await?;
        server.add_tools(browser_tools(Arc::new(driver))).await?;
    } else {
        tracing::info!(chromium = %settings.chromium.display(), "browser tools are off: Chromium not found");
    }
    match WebSearch::from_env()? {
        Some(search) => server.add_tool(Arc::new(search)).await?,
        None => tracing::info!("web_search is off: set BRAVE_API_KEY to turn it on"),
    }

    let mut catalogs = settings.catalog.clone();
    catalogs.extend(imported_catalogs(&settings.data_dir)?);
    for path in &catalogs {
        let tools = CatalogTool::load(path)?;
        let count = tools.len();
        server
            .add_tools(tools)
            .await
            .with_context(|| format!("indexing {}", path.display()))?;
        tracing::info!(tools = count, catalog = %path.display(), "catalog loaded");
    }
    Ok(())
}

/// S3 when `AWS_S3_BUCKET` is set, else local disk under the data directory, with the signer
/// of its URLs (which the user service then serves).
fn file_store(args: &Settings) -> anyhow::Result<(Arc<dyn FileStore>, Option<LocalSigner>)> {
    if let Some(bucket) = args.s3_bucket.as_ref().filter(|b| !b.is_empty()) {
        let config = S3Config {
            bucket: bucket.clone(),
            region: args.s3_region.clone(),
            endpoint: args.s3_endpoint.clone().filter(|e| !e.is_empty()),
        };
        tracing::info!(bucket = %config.bucket, "user files in S3");
        return Ok((Arc::new(ObjectFileStore::s3(&config)?), None));
    }
    let root = args.data_dir.join("files");
    let base_url = match (&args.files_url, args.users_bind.0) {
        (Some(url), _) => url.clone(),
        (None, Some(users)) => format!("http://{users}/files"),
        // The user service runs elsewhere; its default address.
        (None, None) => "http://127.0.0.1:8100/files".to_owned(),
    };
    let signer = LocalSigner::new(local_signing_key(&args.data_dir)?, base_url)?;
    tracing::info!(root = %root.display(), "user files on local disk");
    Ok((
        Arc::new(ObjectFileStore::local(root, signer.clone())?),
        Some(signer),
    ))
}

/// Token verification: the configured issuers (Supabase, Auth0), if any.
fn token_issuers(args: &Settings) -> anyhow::Result<Issuers> {
    Ok(args.issuers.issuers(&mcp_resource(args))?)
}

fn mcp_resource(args: &Settings) -> String {
    args.public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}/mcp", args.bind))
}

/// Whether `/mcp` needs a credential: always, never, or (by default) when it listens beyond
/// loopback. Without a token issuer, the API keys of the user service (or `isa-mcp keys
/// create`) are the credentials.
fn mcp_auth_required(args: &Settings) -> bool {
    let required = match args.require_auth {
        RequireAuth::Always => true,
        RequireAuth::Never => false,
        RequireAuth::Auto => !args.bind.ip().is_loopback(),
    };
    if required && !args.issuers.any() {
        tracing::info!("no token issuer is configured: /mcp accepts API keys only");
    }
    required
}

/// Catalog files imported into the data directory, in name order.
pub fn imported_catalogs(data_dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = data_dir.join("catalog");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

pub use isa_core::http::shutdown_signal;
