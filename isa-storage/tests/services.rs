//! Proves the test suite reaches PostgreSQL with pgvector and the Garage S3 server that
//! `deploy/dev/test.sh` starts. With `ISA_REQUIRE_SERVICES=1` (set by that script) a missing
//! service fails the test; otherwise the test says it was skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use object_store::{ObjectStoreExt, PutPayload, aws::AmazonS3Builder, path::Path};

fn service_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("ISA_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{name} is not set; deploy/dev/test.sh sets it after starting the service")
        }
        _ => {
            eprintln!("skipped: {name} is not set (run ./deploy/dev/test.sh to start services)");
            None
        }
    }
}

#[tokio::test]
async fn pgvector_distance_query_returns_the_right_number() -> anyhow::Result<()> {
    let Some(url) = service_env("ISA_TEST_DATABASE_URL") else {
        return Ok(());
    };
    let pool = sqlx::PgPool::connect(&url).await?;
    sqlx::query("create extension if not exists vector")
        .execute(&pool)
        .await?;
    let (l2, inner, cosine): (f64, f64, f64) = sqlx::query_as(
        "select '[1,2,3]'::vector <-> '[4,6,3]'::vector, \
                '[1,2,3]'::vector <#> '[4,6,3]'::vector, \
                '[1,0]'::vector <=> '[0,1]'::vector",
    )
    .fetch_one(&pool)
    .await?;
    assert!((l2 - 5.0).abs() < 1e-9, "L2 distance {l2}");
    assert!(
        (inner + 25.0).abs() < 1e-9,
        "negative inner product {inner}"
    );
    assert!((cosine - 1.0).abs() < 1e-9, "cosine distance {cosine}");
    Ok(())
}

#[tokio::test]
async fn an_object_written_to_garage_reads_back() -> anyhow::Result<()> {
    let Some(endpoint) = service_env("ISA_TEST_S3_ENDPOINT") else {
        return Ok(());
    };
    let bucket = std::env::var("ISA_TEST_S3_BUCKET")?;
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region(std::env::var("AWS_S3_REGION")?)
        .with_access_key_id(std::env::var("AWS_ACCESS_KEY_ID")?)
        .with_secret_access_key(std::env::var("AWS_SECRET_ACCESS_KEY")?)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()?;
    let path = Path::from(format!("services-test/{}.txt", std::process::id()));
    let body = b"written through object_store's S3 client".to_vec();
    store.put(&path, PutPayload::from(body.clone())).await?;
    let read = store.get(&path).await?.bytes().await?;
    assert_eq!(read.as_ref(), body.as_slice());
    store.delete(&path).await?;
    assert!(
        store.head(&path).await.is_err(),
        "deleted object still there"
    );
    Ok(())
}
