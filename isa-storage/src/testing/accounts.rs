//! Behaviour every [`UserStore`] and [`CreditLedger`] must have.

use std::sync::Arc;

use isa_core::{CreditLedger, Error, UserStore};

use super::fresh_user;

/// A user is made once, on first sight, with the initial credits as a `signup` grant; later
/// sightings keep the account and refresh the email.
pub async fn users_are_made_once_on_first_sight(
    name: &str,
    users: &dyn UserStore,
    ledger: &dyn CreditLedger,
) {
    let alice = fresh_user("alice");
    assert!(users.user(&alice).await.unwrap().is_none(), "{name}");
    let made = users.ensure_user(&alice, None, 10).await.unwrap();
    assert_eq!(
        (made.id.clone(), made.credits),
        (alice.clone(), 10),
        "{name}"
    );
    let again = users
        .ensure_user(&alice, Some("alice@example.com"), 10)
        .await
        .unwrap();
    assert_eq!(again.created_at, made.created_at, "{name}: made once");
    assert_eq!(again.credits, 10, "{name}: the signup grant is given once");
    assert_eq!(again.email.as_deref(), Some("alice@example.com"), "{name}");
    let history = ledger.history(&alice, None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "{name}: {history:?}");
    assert_eq!(
        (history[0].operation.as_str(), history[0].amount),
        ("signup", 10),
        "{name}"
    );
    let poor = fresh_user("poor");
    users.ensure_user(&poor, None, 0).await.unwrap();
    assert!(ledger.history(&poor, None, 10).await.unwrap().is_empty());
}

/// Charges and grants move the balance once per request id, and a request id reused for a
/// different request is a conflict; a charge the balance does not cover changes nothing; bad
/// amounts and labels are refused.
pub async fn a_request_id_is_charged_once_and_a_balance_never_goes_below_zero(
    name: &str,
    users: &dyn UserStore,
    ledger: &dyn CreditLedger,
) {
    let bob = fresh_user("bob");
    users.ensure_user(&bob, None, 10).await.unwrap();
    let first = ledger
        .charge(&bob, "r-1", 3, "model.chat", Some(120))
        .await
        .unwrap();
    assert!(!first.replayed, "{name}");
    assert_eq!(first.transaction.balance_after, 7, "{name}");
    let replay = ledger
        .charge(&bob, "r-1", 3, "model.chat", Some(120))
        .await
        .unwrap();
    assert!(replay.replayed, "{name}");
    assert_eq!(replay.transaction, first.transaction, "{name}");
    assert_eq!(
        users.user(&bob).await.unwrap().unwrap().credits,
        7,
        "{name}"
    );
    // A request id names one request: reused for a different one (a larger amount, another
    // operation or units, a grant's id for a charge) it is a conflict, and nothing moves.
    for different in [
        ledger
            .charge(&bob, "r-1", 30, "model.chat", Some(120))
            .await,
        ledger
            .charge(&bob, "r-1", 3, "model.image", Some(120))
            .await,
        ledger.charge(&bob, "r-1", 3, "model.chat", None).await,
        ledger.charge(&bob, "signup", 1, "model.chat", None).await,
        ledger.grant(&bob, "r-1", 3, "model.chat").await,
    ] {
        assert!(
            matches!(different, Err(Error::Conflict(_))),
            "{name}: {different:?}"
        );
    }
    assert_eq!(
        users.user(&bob).await.unwrap().unwrap().credits,
        7,
        "{name}"
    );

    match ledger.charge(&bob, "r-2", 100, "model.chat", None).await {
        Err(Error::InsufficientCredits { needed, balance }) => {
            assert_eq!((needed, balance), (100, 7), "{name}")
        }
        other => panic!("{name}: {other:?}"),
    }
    assert_eq!(
        ledger.history(&bob, None, 10).await.unwrap().len(),
        2,
        "{name}"
    );

    let granted = ledger.grant(&bob, "g-1", 5, "grant").await.unwrap();
    assert_eq!(granted.transaction.balance_after, 12, "{name}");
    for refused in [
        ledger.charge(&bob, "r-3", 0, "model.chat", None).await,
        ledger.charge(&bob, "r-3", 1, "model.chat", Some(-1)).await,
        ledger.charge(&bob, "", 1, "model.chat", None).await,
        ledger.charge(&bob, "r-3", 1, "bad\noperation", None).await,
        ledger.grant(&bob, "g-2", -5, "grant").await,
    ] {
        assert!(
            matches!(refused, Err(Error::InvalidInput(_))),
            "{name}: {refused:?}"
        );
    }
    let usage = ledger
        .usage(
            &bob,
            chrono::Utc::now() - chrono::Duration::hours(1),
            chrono::Utc::now() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    assert_eq!(usage.len(), 1, "{name}: {usage:?}");
    assert_eq!(
        (
            usage[0].operation.as_str(),
            usage[0].requests,
            usage[0].credits,
            usage[0].units
        ),
        ("model.chat", 1, 3, 120),
        "{name}"
    );
}

/// Concurrent charges of one user never overdraw: exactly as many succeed as the balance
/// covers, and the rest change nothing.
pub async fn concurrent_charges_never_overdraw<S>(name: &str, store: Arc<S>)
where
    S: UserStore + CreditLedger + 'static,
{
    let carol = fresh_user("carol");
    store.ensure_user(&carol, None, 12).await.unwrap();
    let charges: Vec<_> = (0..20)
        .map(|i| {
            let (store, carol) = (store.clone(), carol.clone());
            tokio::spawn(async move {
                store
                    .charge(&carol, &format!("c-{i}"), 1, "tool.call", None)
                    .await
            })
        })
        .collect();
    let mut charged = 0;
    for charge in charges {
        match charge.await.unwrap() {
            Ok(_) => charged += 1,
            Err(Error::InsufficientCredits { .. }) => {}
            Err(other) => panic!("{name}: {other}"),
        }
    }
    assert_eq!(charged, 12, "{name}");
    assert_eq!(
        store.user(&carol).await.unwrap().unwrap().credits,
        0,
        "{name}"
    );
}

/// The history is newest first and pages by the last id seen.
pub async fn the_history_pages_newest_first(
    name: &str,
    users: &dyn UserStore,
    ledger: &dyn CreditLedger,
) {
    let dave = fresh_user("dave");
    users.ensure_user(&dave, None, 0).await.unwrap();
    for i in 0..5 {
        ledger
            .grant(&dave, &format!("g-{i}"), i + 1, "grant")
            .await
            .unwrap();
    }
    let first = ledger.history(&dave, None, 2).await.unwrap();
    let amounts: Vec<i64> = first.iter().map(|t| t.amount).collect();
    assert_eq!(amounts, vec![5, 4], "{name}");
    let next = ledger.history(&dave, Some(&first[1].id), 10).await.unwrap();
    let amounts: Vec<i64> = next.iter().map(|t| t.amount).collect();
    assert_eq!(amounts, vec![3, 2, 1], "{name}");
}
