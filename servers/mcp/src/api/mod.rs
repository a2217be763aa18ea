//! The HTTP services served beside the MCP endpoint, as on the seed deployment's first host:
//! the user service ([`users`], port 8100) and the event service ([`events`], port 8101).
//! Both are built on `isa_core::http`: errors in its envelope, its `/health`, its overload and
//! body-size limits. Each describes itself at `GET /openapi.json`.

pub mod events;
pub(crate) mod openapi;
pub mod users;
