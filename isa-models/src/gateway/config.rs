//! The gateway's configuration file (TOML): providers with their keys by environment variable
//! name, and models with their deployments, prices and fallbacks.
//!
//! ```toml
//! [providers.openai]
//! kind = "openai"
//! api_key_env = "OPENAI_API_KEY"
//!
//! [[models]]
//! name = "gpt-4.1-nano"
//! kind = "chat"
//! deployments = [
//!   { provider = "openai", model = "gpt-4.1-nano", price = { input_per_million = 0.10, output_per_million = 0.40 } },
//! ]
//! ```

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use isa_core::{Embedder, Error, ModelProvider, Result};
use serde::Deserialize;

use super::{BreakerConfig, Gateway, ModelKind, Price, RoutingPolicy};
use crate::providers::{
    ANTHROPIC_BASE_URL, Anthropic, GEMINI_BASE_URL, Gemini, HUGGING_FACE_BASE_URL, HuggingFace,
    LocalEmbeddings, OPENAI_BASE_URL, OpenAi, REPLICATE_BASE_URL, Replicate,
};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Retries, deadlines and breakers.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model names callers use.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
}

/// `[routing]`: see [`RoutingPolicy`]; durations in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Retries of one deployment.
    pub retries: u32,
    /// First backoff.
    pub backoff_ms: u64,
    /// Longest `Retry-After` honoured before falling back.
    pub max_retry_wait_ms: u64,
    /// Deadline for the first event.
    pub first_byte_timeout_ms: u64,
    /// Longest silence in a stream.
    pub idle_timeout_ms: u64,
    /// Deadline for an image.
    pub image_timeout_ms: u64,
    /// Consecutive failures that open a breaker.
    pub breaker_failures: u32,
    /// How long an open breaker rests.
    pub breaker_cooldown_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        let policy = RoutingPolicy::default();
        let ms = |d: Duration| d.as_millis() as u64;
        RoutingConfig {
            retries: policy.retries,
            backoff_ms: ms(policy.backoff),
            max_retry_wait_ms: ms(policy.max_retry_wait),
            first_byte_timeout_ms: ms(policy.first_byte_timeout),
            idle_timeout_ms: ms(policy.idle_timeout),
            image_timeout_ms: ms(policy.image_timeout),
            breaker_failures: policy.breaker.failures,
            breaker_cooldown_ms: ms(policy.breaker.cooldown),
        }
    }
}

impl RoutingConfig {
    /// The policy.
    pub fn policy(&self) -> Result<RoutingPolicy> {
        if self.breaker_failures == 0 {
            return Err(Error::Config(
                "routing.breaker_failures must be at least 1".into(),
            ));
        }
        if self.first_byte_timeout_ms == 0
            || self.idle_timeout_ms == 0
            || self.image_timeout_ms == 0
        {
            return Err(Error::Config("routing timeouts must be positive".into()));
        }
        let ms = Duration::from_millis;
        Ok(RoutingPolicy {
            retries: self.retries,
            backoff: ms(self.backoff_ms),
            max_retry_wait: ms(self.max_retry_wait_ms),
            first_byte_timeout: ms(self.first_byte_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            image_timeout: ms(self.image_timeout_ms),
            breaker: BreakerConfig {
                failures: self.breaker_failures,
                cooldown: ms(self.breaker_cooldown_ms),
            },
        })
    }
}

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI.
    Openai,
    /// A server speaking OpenAI's format (vLLM, Ollama, TEI, LM Studio); needs `base_url`.
    OpenaiCompatible,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// Replicate (images).
    Replicate,
    /// Hugging Face's router.
    HuggingFace,
    /// The local ONNX embedder.
    Local,
}

/// `[providers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire format.
    pub kind: ProviderKind,
    /// Base URL; each kind but `openai_compatible` has its public default.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the key. A provider whose variable is unset is left
    /// out (with a warning), and so are its deployments.
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// `[[models]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name callers use.
    pub name: String,
    /// What it is for.
    pub kind: ModelKind,
    /// Where it is served, first choice first; the rest are fallbacks.
    pub deployments: Vec<DeploymentConfig>,
}

/// One deployment of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentConfig {
    /// A provider's name from `[providers]`.
    pub provider: String,
    /// The model id at the provider.
    pub model: String,
    /// Its prices.
    #[serde(default)]
    pub price: Price,
}

impl GatewayConfig {
    /// Parses a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Config(format!("model configuration: {e}")))
    }

    /// The gateway, with keys read through `env` and the local embedder (for `local`
    /// providers) when one is given.
    pub fn build(
        &self,
        env: impl Fn(&str) -> Option<String>,
        local: Option<Arc<dyn Embedder>>,
    ) -> Result<Gateway> {
        let policy = self.routing.policy()?;
        let mut builder = Gateway::builder(policy);
        let mut available = BTreeMap::new();
        for (name, config) in &self.providers {
            match provider(name, config, &env, local.clone(), policy)? {
                Some(provider) => {
                    available.insert(name.clone(), ());
                    builder = builder.provider(name.clone(), provider);
                }
                None => {
                    tracing::warn!(provider = %name, "provider left out: its key or model is not available")
                }
            }
        }
        for model in &self.models {
            for d in &model.deployments {
                if !self.providers.contains_key(&d.provider) {
                    return Err(Error::Config(format!(
                        "model {}: no provider named {}",
                        model.name, d.provider
                    )));
                }
            }
            let deployments: Vec<(String, String, Price)> = model
                .deployments
                .iter()
                .filter(|d| available.contains_key(&d.provider))
                .map(|d| (d.provider.clone(), d.model.clone(), d.price))
                .collect();
            if deployments.is_empty() {
                tracing::warn!(model = %model.name, "model left out: none of its providers is available");
                continue;
            }
            builder = builder.model(model.name.clone(), model.kind, deployments)?;
        }
        Ok(builder.build())
    }
}

fn provider(
    name: &str,
    config: &ProviderConfig,
    env: &impl Fn(&str) -> Option<String>,
    local: Option<Arc<dyn Embedder>>,
    policy: RoutingPolicy,
) -> Result<Option<Arc<dyn ModelProvider>>> {
    let key = match &config.api_key_env {
        Some(var) => match env(var).filter(|k| !k.trim().is_empty()) {
            Some(key) => Some(key),
            None => return Ok(None),
        },
        None => None,
    };
    let base = |default: &str| {
        config
            .base_url
            .clone()
            .unwrap_or_else(|| default.to_owned())
    };
    let required = |key: Option<String>| {
        key.ok_or_else(|| Error::Config(format!("provider {name} needs api_key_env")))
    };
    let provider: Arc<dyn ModelProvider> = match config.kind {
        ProviderKind::Openai => Arc::new(OpenAi::new(name, &base(OPENAI_BASE_URL), key)?),
        ProviderKind::OpenaiCompatible => {
            let url = config
                .base_url
                .as_deref()
                .ok_or_else(|| Error::Config(format!("provider {name} needs base_url")))?;
            Arc::new(OpenAi::compatible(name, url, key)?)
        }
        ProviderKind::Anthropic => Arc::new(Anthropic::new(
            name,
            &base(ANTHROPIC_BASE_URL),
            required(key)?,
        )?),
        ProviderKind::Gemini => {
            Arc::new(Gemini::new(name, &base(GEMINI_BASE_URL), required(key)?)?)
        }
        ProviderKind::Replicate => Arc::new(Replicate::new(
            name,
            &base(REPLICATE_BASE_URL),
            required(key)?,
            policy.image_timeout,
        )?),
        ProviderKind::HuggingFace => Arc::new(HuggingFace::new(
            name,
            &base(HUGGING_FACE_BASE_URL),
            required(key)?,
        )?),
        ProviderKind::Local => match local {
            Some(embedder) => Arc::new(LocalEmbeddings::new(name, embedder)),
            None => return Ok(None),
        },
    };
    Ok(Some(provider))
}
