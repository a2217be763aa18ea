//! Tools that reach the web: `web_search`, `web_fetch`, and the SSRF guard they and the browser
//! share.

pub mod fetch;
pub mod guard;
pub mod search;

pub use fetch::{FetchConfig, WebFetch};
pub use guard::{Cidr, SsrfGuard};
pub use search::WebSearch;
