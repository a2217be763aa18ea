//! # isa-auth
//!
//! Authentication and authorization that fail closed:
//!
//! - [`JwtVerifier`]: HS256 tokens from Supabase (shared secret) and RS256/ES256 tokens from a
//!   JWKS (Auth0), with algorithms fixed per issuer, audience and issuer checked, `exp`/`nbf`
//!   with a small leeway, and JWKS keys cached and refetched at a bounded rate.
//! - [`ApiKeys`]: `isa_…` keys stored as hashes in a [`KeyStore`].
//! - axum: the [`require_auth`] middleware, which puts the caller's
//!   [`Identity`](isa_core::Identity) into the request (handlers take it as an extractor), and
//!   the RFC 9728 metadata MCP clients discover.
//!
//! Failures answer in the common envelope of [`isa_core::http::ApiError`].

mod apikey;
mod issuers;
mod jwt;
mod layer;

pub use apikey::{ApiKeyRecord, ApiKeys, KEY_PREFIX, KeyStore, MemoryKeyStore};
pub use issuers::{IssuerSettings, Issuers};
pub use jsonwebtoken::Algorithm;
pub use jwt::{IssuerConfig, JwksOptions, JwtVerifier, KeySource, MAX_TOKEN_BYTES};
pub use layer::{Authenticator, Credential, METADATA_PATH, require_auth};
