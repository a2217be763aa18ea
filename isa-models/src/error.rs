//! Conversions from the errors of ONNX Runtime and tokenizers into [`isa_core::Error`].

use isa_core::Error;

pub(crate) fn ort_error(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{context}: {e}"))
}
