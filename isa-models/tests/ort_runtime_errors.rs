//! A runtime library that will not load gives a clear error. Its own test binary, because ONNX
//! Runtime can be loaded only once per process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use isa_models::OrtEmbedder;

#[test]
fn a_library_that_will_not_load_is_named_in_the_error() -> anyhow::Result<()> {
    let Some(mut config) = common::installed_model() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    config.runtime_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&config.runtime_library, b"not a shared library")?;
    let err = OrtEmbedder::new(config.clone()).unwrap_err().to_string();
    assert!(
        err.contains("could not load ONNX Runtime") && err.contains("libonnxruntime.so"),
        "{err}"
    );

    config.runtime_library = dir.path().join("absent.so");
    let err = OrtEmbedder::new(config).unwrap_err().to_string();
    assert!(
        err.contains("ONNX Runtime library not found") && err.contains("absent.so"),
        "{err}"
    );
    Ok(())
}
