//! Helpers shared by the embedder tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use isa_models::EmbedderConfig;

/// The configuration of the model that `deploy/dev/setup-models.sh` installs, or `None` (test
/// skipped) when it is not installed and `ISA_REQUIRE_SERVICES` is not `1`.
pub fn installed_model() -> Option<EmbedderConfig> {
    match EmbedderConfig::from_env() {
        Ok(config) if config.model_file.is_file() && config.runtime_library.is_file() => {
            Some(config)
        }
        result => {
            let why = match result {
                Err(e) => e.to_string(),
                Ok(c) => format!(
                    "{} or {} missing",
                    c.model_file.display(),
                    c.runtime_library.display()
                ),
            };
            assert!(
                std::env::var("ISA_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "the embedding model is required but not installed: {why}"
            );
            eprintln!("skipped: {why} (run deploy/dev/setup-models.sh)");
            None
        }
    }
}
