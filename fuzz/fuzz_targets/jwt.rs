//! Any string presented as a bearer token to a verifier of Supabase tokens (HS256): refused or
//! accepted, never a panic.
#![no_main]

use std::sync::OnceLock;

use isa_auth::{IssuerConfig, JwksOptions, JwtVerifier};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;

const SECRET: &str = "a-supabase-jwt-secret-of-at-least-32-bytes";

fn parts() -> &'static (Runtime, JwtVerifier) {
    static PARTS: OnceLock<(Runtime, JwtVerifier)> = OnceLock::new();
    PARTS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verifier =
            JwtVerifier::new(vec![IssuerConfig::supabase(SECRET)], JwksOptions::default()).unwrap();
        (runtime, verifier)
    })
}

fuzz_target!(|token: &str| {
    let (runtime, verifier) = parts();
    let _ = runtime.block_on(verifier.verify(token));
});
