//! Tool selectors, built-in tools and the plugin API for isa.
