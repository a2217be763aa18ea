//! What of a session the model is shown: its newest whole exchanges within a budget.
//!
//! An exchange is a user message and everything after it up to the next user message (the
//! model's replies, its tool calls and their results). Exchanges are kept whole, newest first,
//! while their characters fit the budget, and older ones are left out; so the model never sees
//! a tool result without the call that asked for it, nor an answer without its question. The
//! session itself keeps every message. Characters stand in for tokens (about four to a token in
//! English), so the rule needs no tokenizer of the model's.

use isa_core::{ChatMessage, Role};

/// Characters a message takes in the model's context: its text and its tool calls.
pub(crate) fn chars(message: &ChatMessage) -> usize {
    let calls: usize = message
        .tool_calls
        .iter()
        .map(|c| {
            c.name.len()
                + serde_json::Value::Object(c.arguments.clone())
                    .to_string()
                    .len()
        })
        .sum();
    message.text_content().chars().count() + calls
}

/// The newest whole exchanges of `messages` (oldest first) whose characters fit `budget`.
pub(crate) fn recent_exchanges(messages: Vec<ChatMessage>, budget: usize) -> Vec<ChatMessage> {
    let mut start = messages.len();
    let mut used = 0;
    let mut exchange = 0;
    for (index, message) in messages.iter().enumerate().rev() {
        exchange += chars(message);
        if message.role == Role::User {
            if used + exchange > budget {
                break;
            }
            used += exchange;
            exchange = 0;
            start = index;
        }
    }
    messages.into_iter().skip(start).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::text(Role::User, text)
    }

    fn assistant(text: &str) -> ChatMessage {
        ChatMessage::text(Role::Assistant, text)
    }

    #[test]
    fn the_newest_whole_exchanges_that_fit_are_kept() {
        let call = ChatMessage {
            tool_calls: vec![isa_core::ToolCallRequest {
                id: "c1".into(),
                name: "list".into(),
                arguments: isa_core::JsonObject::new(),
            }],
            ..assistant("")
        };
        let session = vec![
            user("aaaaaaaaaa"),      // 10
            assistant("bbbbbbbbbb"), // 10
            user("cccc"),            // 4
            call,                    // 4 + 2
            ChatMessage::tool_result("c1", "dddddddddd"),
            assistant("ee"),
        ];
        // The newest exchange takes 4 + 6 + 10 + 2 = 22 characters.
        assert_eq!(recent_exchanges(session.clone(), 22), session[2..].to_vec());
        assert_eq!(recent_exchanges(session.clone(), 41), session[2..].to_vec());
        assert_eq!(recent_exchanges(session.clone(), 42), session);
        // Too small for the newest exchange: nothing, rather than a tool result without its call.
        assert!(recent_exchanges(session.clone(), 21).is_empty());
        assert!(recent_exchanges(Vec::new(), 100).is_empty());
    }

    #[test]
    fn messages_before_the_first_user_message_are_left_out() {
        let session = vec![assistant("hello"), user("hi"), assistant("yes")];
        assert_eq!(
            recent_exchanges(session.clone(), 1000),
            session[1..].to_vec()
        );
    }
}
