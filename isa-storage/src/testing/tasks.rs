use std::time::Duration;

use chrono::Utc;
use isa_core::{AuthMethod, Identity, TaskRecord, TaskStatus, TaskStore};
use serde_json::{Map, json};

use super::fresh_user;

fn task(ttl: Duration) -> TaskRecord {
    let now = Utc::now();
    TaskRecord {
        id: uuid::Uuid::now_v7().to_string(),
        identity: Some(Identity::new(fresh_user("tasker"), AuthMethod::Trusted)),
        tool: "slow_compute".into(),
        arguments: json!({"seconds": 2}).as_object().cloned().unwrap(),
        client_capabilities: json!({"extensions": {"io.modelcontextprotocol/tasks": {}}}),
        status: TaskStatus::Working,
        answers: Map::new(),
        input_requests: Map::new(),
        result: None,
        error: None,
        created_at: now,
        updated_at: now,
        ttl,
        version: 0,
    }
}

/// A task reads back as it was written; an update applies only to the version it read, so of
/// two writers that read the same version one wins and the other is told; expired tasks go.
pub async fn tasks_are_stored_whole_and_updated_only_from_the_version_read(
    backend: &str,
    store: &dyn TaskStore,
) {
    let created = task(Duration::from_secs(3600));
    store.create(&created).await.unwrap();
    assert_eq!(
        store.get(&created.id).await.unwrap().as_ref(),
        Some(&created),
        "{backend}: a task reads back as written"
    );
    assert!(
        store.create(&created).await.is_err(),
        "{backend}: an id is taken once"
    );
    assert_eq!(store.get("no-such-task").await.unwrap(), None, "{backend}");

    let mut waiting = created.clone();
    waiting.status = TaskStatus::InputRequired;
    waiting.input_requests = json!({"confirm": {"method": "elicitation/create", "params": {}}})
        .as_object()
        .cloned()
        .unwrap();
    assert!(store.update(&waiting, 0).await.unwrap(), "{backend}");
    let mut cancelled = created.clone();
    cancelled.status = TaskStatus::Cancelled;
    assert!(
        !store.update(&cancelled, 0).await.unwrap(),
        "{backend}: a writer that read an older version is refused"
    );
    let stored = store.get(&created.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 1, "{backend}");
    assert_eq!(stored.status, TaskStatus::InputRequired, "{backend}");
    assert_eq!(stored.input_requests, waiting.input_requests, "{backend}");

    let short = task(Duration::from_millis(1));
    store.create(&short).await.unwrap();
    let removed = store
        .remove_expired(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert!(removed >= 1, "{backend}: the expired task is removed");
    assert_eq!(store.get(&short.id).await.unwrap(), None, "{backend}");
    assert!(
        store.get(&created.id).await.unwrap().is_some(),
        "{backend}: a task within its time to live stays"
    );
}
