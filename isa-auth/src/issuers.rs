//! The token issuers a server is configured with, turned into one [`JwtVerifier`].

use std::sync::Arc;

use isa_core::{EventSink, Result};

use crate::{ApiKeys, Authenticator, IssuerConfig, JwksOptions, JwtVerifier, KeySource};

/// The issuers every isa server accepts tokens from, as its settings name them.
/// With feature `clap`, servers flatten it into their settings.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct IssuerSettings {
    /// Supabase JWT secret: accept Supabase's HS256 tokens (audience `authenticated`).
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "SUPABASE_JWT_SECRET", hide_env_values = true)
    )]
    pub supabase_jwt_secret: Option<String>,
    /// Auth0 domain: accept its RS256/ES256 tokens.
    #[cfg_attr(feature = "clap", arg(long, env = "AUTH0_DOMAIN"))]
    pub auth0_domain: Option<String>,
    /// Audience of Auth0 tokens; the server's public URL when not set.
    #[cfg_attr(feature = "clap", arg(long, env = "AUTH0_AUDIENCE"))]
    pub auth0_audience: Option<String>,
    /// JWKS URL of the Auth0 (or other OAuth) issuer, when not at the domain's standard path.
    #[cfg_attr(feature = "clap", arg(long, env = "ISA_AUTH0_JWKS_URL"))]
    pub auth0_jwks_url: Option<String>,
}

/// A verifier for the configured issuers, and their URLs for protected-resource metadata.
pub struct Issuers {
    /// `None` when no issuer is configured: API keys are then the only credentials.
    pub verifier: Option<JwtVerifier>,
    /// Issuer URLs of OAuth authorization servers.
    pub authorization_servers: Vec<String>,
}

impl IssuerSettings {
    /// The verifier; `resource` is the audience of Auth0 tokens unless one is set.
    pub fn issuers(&self, resource: &str) -> Result<Issuers> {
        let mut issuers = Vec::new();
        let mut authorization_servers = Vec::new();
        if let Some(secret) = &self.supabase_jwt_secret {
            issuers.push(IssuerConfig::supabase(secret.as_bytes().to_vec()));
        }
        if let Some(domain) = &self.auth0_domain {
            let audience = self
                .auth0_audience
                .clone()
                .unwrap_or_else(|| resource.to_owned());
            let mut auth0 = IssuerConfig::auth0(domain, audience);
            if let Some(url) = &self.auth0_jwks_url {
                auth0.keys = KeySource::Jwks(url.clone());
            }
            authorization_servers.extend(auth0.issuer.clone());
            issuers.push(auth0);
        }
        let verifier = if issuers.is_empty() {
            None
        } else {
            Some(JwtVerifier::new(issuers, JwksOptions::default())?)
        };
        Ok(Issuers {
            verifier,
            authorization_servers,
        })
    }

    /// A service's authenticator: tokens of these issuers (their audience `resource` unless
    /// one is set) and the API keys of `keys`, each use of a key recorded in `events`.
    pub fn authenticator(
        &self,
        resource: &str,
        keys: ApiKeys,
        events: Arc<dyn EventSink>,
    ) -> Result<Authenticator> {
        let issuers = self.issuers(resource)?;
        Ok(Authenticator::new(resource, issuers.verifier, Some(keys))
            .with_authorization_servers(issuers.authorization_servers)
            .with_events(events))
    }

    /// Whether any issuer is configured.
    pub fn any(&self) -> bool {
        self.supabase_jwt_secret.is_some() || self.auth0_domain.is_some()
    }
}
