//! Helpers shared by the criterion benches: locating model files and benchmark data.
