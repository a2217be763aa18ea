//! Charging callers for what they use: a balance check before the work, one charge per request
//! id after it, and a `model.usage` event for every request.

use std::sync::Arc;

use isa_core::{CreditLedger, Error, Event, EventSink, Identity, Result, Usage, UserStore};
use serde_json::{Value, json};

/// Where usage is charged and recorded.
#[derive(Clone)]
pub struct Metering {
    /// Users (made on first sight, with `initial_credits`) and their ledger; `None` serves
    /// without charging.
    pub credits: Option<(Arc<dyn UserStore>, Arc<dyn CreditLedger>)>,
    /// Credits a new user starts with.
    pub initial_credits: i64,
    /// Credits per US dollar of cost: 1,000,000 makes a credit a micro-dollar.
    pub credits_per_usd: f64,
    /// Where `model.usage` events go.
    pub events: Option<Arc<dyn EventSink>>,
}

impl Default for Metering {
    fn default() -> Self {
        Metering {
            credits: None,
            initial_credits: 0,
            credits_per_usd: 1_000_000.0,
            events: None,
        }
    }
}

/// One request's use, as charged and recorded.
pub struct Use<'a> {
    /// Who.
    pub identity: &'a Identity,
    /// The request id (charged at most once).
    pub request_id: &'a str,
    /// `model.chat`, `model.embeddings` or `model.images`.
    pub operation: &'static str,
    /// The name the caller asked for.
    pub model: &'a str,
    /// `provider/model` that answered.
    pub deployment: String,
    /// Tokens.
    pub usage: Usage,
    /// Images made.
    pub images: u32,
    /// Dollars.
    pub cost_usd: f64,
    /// How the request ended: `ok`, `error`, `abandoned`.
    pub outcome: &'static str,
    /// Milliseconds from request to the end of the answer.
    pub latency_ms: u64,
}

impl Metering {
    /// Refuses a caller whose balance is spent (402) before a `priced` model is asked.
    pub async fn admit(&self, identity: &Identity, priced: bool) -> Result<()> {
        let Some((users, _)) = &self.credits else {
            return Ok(());
        };
        if !priced {
            return Ok(());
        }
        let user = users
            .ensure_user(
                &identity.user_id,
                identity.email.as_deref(),
                self.initial_credits,
            )
            .await?;
        if user.credits <= 0 {
            return Err(Error::InsufficientCredits {
                needed: 1,
                balance: user.credits,
            });
        }
        Ok(())
    }

    /// Credits for a cost: whole credits, rounded up so that no paid request is free (after
    /// rounding away the float error of the price arithmetic, so 4.000000000000001 is 4).
    pub fn credits_for(&self, cost_usd: f64) -> i64 {
        let credits = ((cost_usd * self.credits_per_usd) * 1e6).round() / 1e6;
        credits.ceil().max(0.0) as i64
    }

    /// What an answer tells the caller about its use: the model and deployment, tokens,
    /// images, cost and credits.
    pub fn billing(&self, used: &Use<'_>) -> Value {
        json!({
            "model": used.model,
            "deployment": used.deployment,
            "input_tokens": used.usage.input_tokens,
            "output_tokens": used.usage.output_tokens,
            "images": used.images,
            "cost_usd": used.cost_usd,
            "credits": self.credits_for(used.cost_usd),
        })
    }

    /// Charges a request's use once and records its event; returns what the answer tells the
    /// caller about it. A charge the balance no longer covers takes what is left; a request id
    /// charged before is not charged again.
    pub async fn settle(&self, used: Use<'_>) -> Value {
        let credits = self.credits_for(used.cost_usd);
        let mut charged = 0;
        let mut replayed = false;
        if let Some((_, ledger)) = &self.credits
            && credits > 0
        {
            let user = &used.identity.user_id;
            let units = Some((used.usage.input_tokens + used.usage.output_tokens) as i64);
            let charge =
                |amount| ledger.charge(user, used.request_id, amount, used.operation, units);
            match charge(credits).await {
                Ok(c) if c.replayed => replayed = true,
                Ok(_) => charged = credits,
                Err(Error::InsufficientCredits { balance, .. }) if balance > 0 => {
                    match charge(balance).await {
                        Ok(c) if c.replayed => replayed = true,
                        Ok(_) => charged = balance,
                        Err(e) => {
                            tracing::error!(error = %e, "charging the rest of a balance failed")
                        }
                    }
                }
                // The id was charged for another answer to the same request: a retry.
                Err(Error::Conflict(_)) => replayed = true,
                Err(e) => {
                    tracing::error!(error = %e, request_id = used.request_id, "charging a model request failed")
                }
            }
        }
        let billing = self.billing(&used);
        if let Some(events) = &self.events {
            let mut payload = billing.clone();
            payload["request_id"] = json!(used.request_id);
            payload["operation"] = json!(used.operation);
            payload["charged"] = json!(charged);
            payload["replayed"] = json!(replayed);
            payload["outcome"] = json!(used.outcome);
            payload["latency_ms"] = json!(used.latency_ms);
            let event = Event::now("model.usage", Some(used.identity.user_id.clone()), payload);
            events.emit(event).await;
        }
        billing
    }
}
