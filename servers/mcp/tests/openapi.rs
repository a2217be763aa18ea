//! Each service's OpenAPI document against the service itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use common::*;
use isa_storage::events::BatchingConfig;
use reqwest::Client;
use serde_json::Value;

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_is_served() {
    let (_, db, dir) = databases().await.remove(0);
    let users = user_service(&db, dir.path()).await;
    let events = event_service(&db, BatchingConfig::default()).await;
    let http = Client::new();
    for (base, prefix) in [(&users.base, "/api/users"), (&events.base, "/api/events")] {
        let doc: Value = http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        // The same document under the service's prefix, where the load balancer sends it.
        let through_balancer: Value = http
            .get(format!("{base}{prefix}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(through_balancer, doc);
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 4);
        for (path, operations) in paths {
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            for method in operations.as_object().unwrap().keys() {
                let method: reqwest::Method = method.to_uppercase().parse().unwrap();
                let status = http
                    .request(method.clone(), format!("{base}{concrete}"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert!(
                    status != 404 && status != 405,
                    "{method} {path} is documented but answers {status}"
                );
            }
        }
    }
}
