//! Authentication and authorization for isa: JWTs, API keys, axum layers.
