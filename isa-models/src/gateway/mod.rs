//! The gateway: model names (aliases, or `provider/model`) routed to deployments, with
//! retries that honour the provider's wait, fallbacks in the configured order, a circuit
//! breaker per deployment, and deadlines for the first byte and for silences in a stream.
//!
//! Retries and fallbacks happen only before anything of the answer is handed on: for a
//! streamed chat, until the provider's first event; for everything else, until the whole
//! answer is in. Once a stream has started, a failure ends it with an error event.

mod breaker;
mod config;
mod metrics;
mod usage;

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use isa_core::{
    ChatEvent, ChatRequest, ChatStream, EmbeddingRequest, EmbeddingResponse, Error, GeneratedImage,
    ImageRequest, ModelProvider, Result,
};
use rand::Rng;
use tokio::time::{Instant, timeout};

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use config::{DeploymentConfig, GatewayConfig, ModelConfig, ProviderConfig, ProviderKind};
pub use metrics::DeploymentMetrics;
pub use usage::{Price, TokenCounter};

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Chat completions.
    Chat,
    /// Embeddings.
    Embeddings,
    /// Image generation.
    Images,
}

/// Retries, deadlines and breakers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingPolicy {
    /// Retries of one deployment after a failure that may pass, before falling back.
    pub retries: u32,
    /// The first backoff; each retry doubles it (with jitter).
    pub backoff: Duration,
    /// The longest wait a provider's `Retry-After` may ask for; a longer one moves on to the
    /// next deployment at once.
    pub max_retry_wait: Duration,
    /// How long a provider may take to start answering (a chat's first event, or a whole
    /// embedding answer).
    pub first_byte_timeout: Duration,
    /// The longest silence inside a streamed answer.
    pub idle_timeout: Duration,
    /// How long an image may take.
    pub image_timeout: Duration,
    /// When breakers open.
    pub breaker: BreakerConfig,
}

impl Default for RoutingPolicy {
    fn default() -> Self {
        RoutingPolicy {
            retries: 2,
            backoff: Duration::from_millis(200),
            max_retry_wait: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            image_timeout: Duration::from_secs(180),
            breaker: BreakerConfig::default(),
        }
    }
}

/// One model at one provider.
pub struct Deployment {
    provider_name: String,
    model: String,
    price: Price,
    provider: Arc<dyn ModelProvider>,
    breaker: Breaker,
    metrics: Arc<DeploymentMetrics>,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("provider", &self.provider_name)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    /// The provider's configured name.
    pub fn provider(&self) -> &str {
        &self.provider_name
    }

    /// The model id at the provider.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// `provider/model`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.provider_name, self.model)
    }

    /// Its prices.
    pub fn price(&self) -> Price {
        self.price
    }

    /// Its counters.
    pub fn metrics(&self) -> &DeploymentMetrics {
        &self.metrics
    }

    /// Its breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
}

/// A model name callers use and the deployments that serve it, in fallback order.
#[derive(Debug)]
pub struct Route {
    /// The name.
    pub name: String,
    /// What it is for.
    pub kind: ModelKind,
    /// Where it is served, first choice first.
    pub deployments: Vec<Arc<Deployment>>,
}

/// A chat answer being delivered.
pub struct ChatAnswer {
    /// The deployment that answers.
    pub deployment: Arc<Deployment>,
    /// Its events; a failure after the first ends the stream with an error.
    pub events: ChatStream,
    /// When the request was received.
    pub started: Instant,
    /// Time to the first event.
    pub first_event: Duration,
}

/// Routes requests to deployments.
pub struct Gateway {
    routes: BTreeMap<String, Arc<Route>>,
    deployments: Vec<Arc<Deployment>>,
    policy: RoutingPolicy,
}

/// Builds a [`Gateway`] from providers and routes (see also [`GatewayConfig`]).
pub struct GatewayBuilder {
    policy: RoutingPolicy,
    providers: BTreeMap<String, Arc<dyn ModelProvider>>,
    deployments: BTreeMap<String, Arc<Deployment>>,
    routes: BTreeMap<String, Arc<Route>>,
}

impl GatewayBuilder {
    /// Adds a provider under `name` (its deployments are named `name/model`).
    pub fn provider(mut self, name: impl Into<String>, provider: Arc<dyn ModelProvider>) -> Self {
        self.providers.insert(name.into(), provider);
        self
    }

    /// Adds a model `name` served by `deployments` (`(provider name, model id, price)`) in
    /// fallback order. Each deployment is also reachable by its own `provider/model` name.
    pub fn model(
        mut self,
        name: impl Into<String>,
        kind: ModelKind,
        deployments: impl IntoIterator<Item = (String, String, Price)>,
    ) -> Result<Self> {
        let name = name.into();
        let mut chosen = Vec::new();
        for (provider_name, model, price) in deployments {
            let id = format!("{provider_name}/{model}");
            let deployment = match self.deployments.get(&id) {
                Some(existing) => {
                    if existing.price != price {
                        return Err(Error::Config(format!(
                            "deployment {id} is listed with two prices"
                        )));
                    }
                    existing.clone()
                }
                None => {
                    let provider =
                        self.providers.get(&provider_name).cloned().ok_or_else(|| {
                            Error::Config(format!(
                                "model {name}: no provider named {provider_name}"
                            ))
                        })?;
                    let capabilities = provider.capabilities();
                    let able = match kind {
                        ModelKind::Chat => capabilities.chat,
                        ModelKind::Embeddings => capabilities.embeddings,
                        ModelKind::Images => capabilities.images,
                    };
                    if !able {
                        return Err(Error::Config(format!(
                            "model {name}: provider {provider_name} does not serve {kind:?}"
                        )));
                    }
                    let deployment = Arc::new(Deployment {
                        provider_name,
                        model,
                        price,
                        provider,
                        breaker: Breaker::new(self.policy.breaker),
                        metrics: Arc::default(),
                    });
                    self.deployments.insert(id.clone(), deployment.clone());
                    let own = Route {
                        name: id.clone(),
                        kind,
                        deployments: vec![deployment.clone()],
                    };
                    self.routes.insert(id, Arc::new(own));
                    deployment
                }
            };
            chosen.push(deployment);
        }
        if chosen.is_empty() {
            return Err(Error::Config(format!("model {name} has no deployments")));
        }
        let names_its_one_deployment = chosen.len() == 1 && chosen[0].id() == name;
        if self.routes.contains_key(&name) && !names_its_one_deployment {
            return Err(Error::Config(format!("model name {name} is used twice")));
        }
        let route = Route {
            name: name.clone(),
            kind,
            deployments: chosen,
        };
        self.routes.insert(name, Arc::new(route));
        Ok(self)
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        Gateway {
            routes: self.routes,
            deployments: self.deployments.into_values().collect(),
            policy: self.policy,
        }
    }
}

/// Whether an error is about the request itself, so that no deployment would do better.
fn is_callers(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidInput(_)
            | Error::NotFound(_)
            | Error::TooLarge { .. }
            | Error::UnsupportedMediaType(_)
            | Error::Forbidden(_)
    )
}

impl Gateway {
    /// A builder with `policy`.
    pub fn builder(policy: RoutingPolicy) -> GatewayBuilder {
        GatewayBuilder {
            policy,
            providers: BTreeMap::new(),
            deployments: BTreeMap::new(),
            routes: BTreeMap::new(),
        }
    }

    /// The route of a model name, which must serve `kind`.
    pub fn route(&self, name: &str, kind: ModelKind) -> Result<Arc<Route>> {
        let route = self
            .routes
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("model {name:?}")))?;
        if route.kind != kind {
            return Err(Error::invalid(format!(
                "model {name:?} is a {:?} model, not a {kind:?} model",
                route.kind
            )));
        }
        Ok(route.clone())
    }

    /// Every model name, aliases and `provider/model` names alike.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().map(|r| r.as_ref())
    }

    /// Every deployment.
    pub fn deployments(&self) -> &[Arc<Deployment>] {
        &self.deployments
    }

    /// The routing policy.
    pub fn policy(&self) -> &RoutingPolicy {
        &self.policy
    }

    /// Prometheus text for every deployment.
    pub fn metrics(&self) -> String {
        let labeled: Vec<metrics::Labeled> = self
            .deployments
            .iter()
            .map(|d| {
                let breaker_of = d.clone();
                metrics::Labeled {
                    provider: d.provider_name.clone(),
                    model: d.model.clone(),
                    metrics: d.metrics.clone(),
                    breaker: Box::new(move || breaker_of.breaker.state()),
                }
            })
            .collect();
        metrics::write_prometheus(&labeled)
    }

    /// A chat answer. `streamed`: the answer is handed on as it comes, so only its start may
    /// be retried; otherwise the whole answer is gathered (and may be retried) first.
    pub async fn chat(
        &self,
        route: &Route,
        request: ChatRequest,
        streamed: bool,
    ) -> Result<ChatAnswer> {
        let started = Instant::now();
        let policy = self.policy;
        let (deployment, (events, first_event)) = self
            .attempt_each(route, |deployment| {
                let mut request = request.clone();
                request.model = deployment.model.clone();
                async move {
                    let opening = async {
                        let mut events = deployment.provider.chat_stream(request).await?;
                        match events.next().await {
                            Some(Ok(first)) => Ok((first, events)),
                            Some(Err(e)) => Err(e),
                            None => Err(Error::Upstream {
                                service: deployment.provider_name.clone(),
                                status: None,
                                message: "empty stream".into(),
                                retryable: true,
                            }),
                        }
                    };
                    let (first, rest) = timeout(policy.first_byte_timeout, opening)
                        .await
                        .map_err(|_| Error::Timeout(policy.first_byte_timeout))??;
                    let first_event = started.elapsed();
                    let events: ChatStream = Box::pin(
                        futures::stream::once(async { Ok(first) })
                            .chain(idle_limited(rest, policy.idle_timeout)),
                    );
                    if streamed {
                        return Ok((events, first_event));
                    }
                    let mut gathered: Vec<Result<ChatEvent>> = events.collect().await;
                    // A stream ends at its first error: the whole answer may then be retried.
                    match gathered.pop() {
                        Some(Err(e)) => return Err(e),
                        Some(last) => gathered.push(last),
                        None => {}
                    }
                    Ok((
                        Box::pin(futures::stream::iter(gathered)) as ChatStream,
                        first_event,
                    ))
                }
            })
            .await?;
        Ok(ChatAnswer {
            deployment,
            events,
            started,
            first_event,
        })
    }

    /// Embeddings, with the same retries and fallbacks.
    pub async fn embed(
        &self,
        route: &Route,
        request: EmbeddingRequest,
    ) -> Result<(Arc<Deployment>, EmbeddingResponse)> {
        let deadline = self.policy.first_byte_timeout;
        self.attempt_each(route, |deployment| {
            let mut request = request.clone();
            request.model = deployment.model.clone();
            async move {
                timeout(deadline, deployment.provider.embed(request))
                    .await
                    .map_err(|_| Error::Timeout(deadline))?
            }
        })
        .await
    }

    /// Images, with the same retries and fallbacks.
    pub async fn generate_image(
        &self,
        route: &Route,
        request: ImageRequest,
    ) -> Result<(Arc<Deployment>, Vec<GeneratedImage>)> {
        let deadline = self.policy.image_timeout;
        self.attempt_each(route, |deployment| {
            let mut request = request.clone();
            request.model = deployment.model.clone();
            async move {
                timeout(deadline, deployment.provider.generate_image(request))
                    .await
                    .map_err(|_| Error::Timeout(deadline))?
            }
        })
        .await
    }

    /// Tries the route's deployments in order, skipping those whose breaker is open, retrying
    /// each while its failures may pass.
    async fn attempt_each<T, F, Fut>(
        &self,
        route: &Route,
        mut call: F,
    ) -> Result<(Arc<Deployment>, T)>
    where
        F: FnMut(Arc<Deployment>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut last_error = None;
        for deployment in &route.deployments {
            let mut retry = 0;
            while deployment.breaker.allow() {
                let outcome = call(deployment.clone()).await;
                let error = match outcome {
                    Ok(value) => {
                        deployment.breaker.succeeded();
                        return Ok((deployment.clone(), value));
                    }
                    Err(error) => error,
                };
                deployment.metrics.failed(error.code());
                if is_callers(&error) {
                    // The deployment answered; the request is what is wrong.
                    deployment.breaker.succeeded();
                    return Err(error);
                }
                deployment.breaker.failed();
                tracing::warn!(deployment = %deployment.id(), retry, error = %error, "model request failed");
                let wait = match &error {
                    _ if !error.is_retryable() || retry >= self.policy.retries => None,
                    Error::Overloaded { retry_after } => {
                        Some(*retry_after).filter(|w| *w <= self.policy.max_retry_wait)
                    }
                    _ => Some(backoff(self.policy.backoff, retry)),
                };
                last_error = Some(error);
                let Some(wait) = wait else { break };
                tokio::time::sleep(wait).await;
                retry += 1;
            }
        }
        Err(last_error.unwrap_or_else(|| {
            Error::Unavailable(format!(
                "every deployment of {} is cooling down after failures",
                route.name
            ))
        }))
    }
}

/// `base × 2^retry`, between half and all of it at random, so that clients that failed together
/// do not retry together.
fn backoff(base: Duration, retry: u32) -> Duration {
    let full = base.saturating_mul(1 << retry.min(16));
    full.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// A stream that fails with [`Error::Timeout`] after `idle` without an event, then ends.
fn idle_limited(events: ChatStream, idle: Duration) -> ChatStream {
    Box::pin(futures::stream::unfold(
        Some(events),
        move |events| async move {
            let mut events = events?;
            match timeout(idle, events.next()).await {
                Ok(Some(Ok(event))) => Some((Ok(event), Some(events))),
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((Err(Error::Timeout(idle)), None)),
            }
        },
    ))
}
