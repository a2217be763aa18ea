//! File stores, databases, event sinks and the pgvector tool index for isa.
