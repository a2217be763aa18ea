//! Behaviour every [`SessionStore`] must have.

use isa_core::{ChatMessage, Error, JsonObject, Role, SessionStore, ToolCallRequest, UserStore};

use super::fresh_user;

/// A session is its owner's alone: opened (made once), added to in order with messages kept
/// whole (tool calls and results too), listed newest first, deleted with its messages; another
/// user can neither open, read, add to, list nor delete it; bad ids are refused.
pub async fn sessions_keep_their_messages_and_belong_to_their_user(
    name: &str,
    users: &dyn UserStore,
    sessions: &dyn SessionStore,
) {
    let alice = fresh_user("alice");
    let bob = fresh_user("bob");
    users.ensure_user(&alice, None, 0).await.unwrap();
    users.ensure_user(&bob, None, 0).await.unwrap();
    let id = format!("chat-{}", uuid::Uuid::now_v7().simple());

    let long_title = "List my files, please. ".repeat(10);
    let opened = sessions.open(&alice, &id, &long_title).await.unwrap();
    assert_eq!(
        (opened.user_id.clone(), opened.messages),
        (alice.clone(), 0),
        "{name}"
    );
    assert!(
        opened.title.as_ref().unwrap().chars().count() <= 80,
        "{name}: a title is short"
    );
    let again = sessions.open(&alice, &id, "another title").await.unwrap();
    assert_eq!(
        (again.created_at, again.title.clone()),
        (opened.created_at, opened.title.clone()),
        "{name}: opened once"
    );

    let mut arguments = JsonObject::new();
    arguments.insert("limit".into(), serde_json::json!(5));
    let conversation = vec![
        ChatMessage::text(Role::User, "list my files"),
        ChatMessage {
            tool_calls: vec![ToolCallRequest {
                id: "call_1".into(),
                name: "list_files".into(),
                arguments,
            }],
            ..ChatMessage::text(Role::Assistant, "")
        },
        ChatMessage::tool_result("call_1", "{\"files\": []}"),
        ChatMessage::text(Role::Assistant, "You have no files yet — «none» at all."),
    ];
    sessions
        .append(&alice, &id, &conversation[..1])
        .await
        .unwrap();
    sessions
        .append(&alice, &id, &conversation[1..])
        .await
        .unwrap();
    let (session, stored) = sessions.session(&alice, &id).await.unwrap();
    assert_eq!(session.messages, 4, "{name}");
    assert!(session.updated_at >= opened.updated_at, "{name}");
    let read: Vec<ChatMessage> = stored.iter().map(|m| m.message.clone()).collect();
    assert_eq!(
        read, conversation,
        "{name}: messages come back whole and in order"
    );

    // Another user: the id is taken, and the session is not theirs to see or change.
    assert!(
        matches!(
            sessions.open(&bob, &id, "mine").await,
            Err(Error::Forbidden(_))
        ),
        "{name}"
    );
    assert!(
        matches!(sessions.session(&bob, &id).await, Err(Error::NotFound(_))),
        "{name}"
    );
    let intrusion = sessions.append(&bob, &id, &conversation[..1]).await;
    assert!(
        matches!(intrusion, Err(Error::NotFound(_))),
        "{name}: {intrusion:?}"
    );
    assert!(
        sessions.sessions(&bob, 10).await.unwrap().is_empty(),
        "{name}"
    );
    assert!(!sessions.delete(&bob, &id).await.unwrap(), "{name}");
    assert_eq!(
        sessions.session(&alice, &id).await.unwrap().1.len(),
        4,
        "{name}: nothing changed"
    );

    // Listing: newest first, the owner's alone.
    let second = format!("chat-{}", uuid::Uuid::now_v7().simple());
    sessions.open(&alice, &second, "second").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    sessions
        .append(&alice, &second, &conversation[..1])
        .await
        .unwrap();
    let listed: Vec<String> = sessions
        .sessions(&alice, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, vec![second.clone(), id.clone()], "{name}");
    assert_eq!(
        sessions.sessions(&alice, 1).await.unwrap().len(),
        1,
        "{name}"
    );

    assert!(sessions.delete(&alice, &id).await.unwrap(), "{name}");
    assert!(
        matches!(sessions.session(&alice, &id).await, Err(Error::NotFound(_))),
        "{name}"
    );
    assert!(
        !sessions.delete(&alice, &id).await.unwrap(),
        "{name}: deleted once"
    );
    // The id is free again, and a new session under it starts empty.
    assert_eq!(
        sessions.open(&bob, &id, "now mine").await.unwrap().messages,
        0,
        "{name}"
    );

    for bad in ["", "has space", &"x".repeat(129)] {
        let refused = sessions.open(&alice, bad, "t").await;
        assert!(
            matches!(refused, Err(Error::InvalidInput(_))),
            "{name}: {bad:?} {refused:?}"
        );
    }
}
