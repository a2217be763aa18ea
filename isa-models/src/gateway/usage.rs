//! Prices and token counts: what a request cost.

use isa_core::{ChatEvent, ChatMessage, Usage};
use serde::{Deserialize, Serialize};

use crate::estimate_tokens;

/// A deployment's prices in US dollars, per million tokens (as providers publish them) and per
/// image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Dollars per million prompt tokens.
    #[serde(default)]
    pub input_per_million: f64,
    /// Dollars per million generated tokens.
    #[serde(default)]
    pub output_per_million: f64,
    /// Dollars per generated image.
    #[serde(default)]
    pub per_image: f64,
}

impl Price {
    /// The cost of `usage` and `images`, in dollars.
    ///
    /// ```
    /// use isa_core::Usage;
    /// use isa_models::gateway::Price;
    /// let price = Price { input_per_million: 0.1, output_per_million: 0.4, per_image: 0.0 };
    /// let usage = Usage { input_tokens: 1_000_000, output_tokens: 500_000 };
    /// assert!((price.cost(usage, 0) - 0.3).abs() < 1e-12);
    /// ```
    pub fn cost(&self, usage: Usage, images: u32) -> f64 {
        usage.input_tokens as f64 * self.input_per_million / 1e6
            + usage.output_tokens as f64 * self.output_per_million / 1e6
            + f64::from(images) * self.per_image
    }
}

/// Counts a chat's tokens: the provider's own counts when it reports them, else an estimate
/// from the text of the prompt and of what was streamed, so that a stream that breaks or is
/// abandoned is still metered for what it produced.
#[derive(Debug, Clone, Default)]
pub struct TokenCounter {
    prompt_estimate: u64,
    output_chars: u64,
    reported: Option<Usage>,
}

impl TokenCounter {
    /// A counter for a chat over `messages`.
    pub fn new(messages: &[ChatMessage]) -> Self {
        let prompt: u64 = messages
            .iter()
            .map(|m| {
                estimate_tokens(&m.text_content())
                    + m.tool_calls
                        .iter()
                        .map(|c| {
                            estimate_tokens(&c.name)
                                + estimate_tokens(
                                    &serde_json::Value::Object(c.arguments.clone()).to_string(),
                                )
                        })
                        .sum::<u64>()
            })
            .sum();
        TokenCounter {
            prompt_estimate: prompt,
            ..Default::default()
        }
    }

    /// Takes note of one event.
    pub fn observe(&mut self, event: &ChatEvent) {
        match event {
            ChatEvent::TextDelta { text } => self.output_chars += text.chars().count() as u64,
            ChatEvent::ToolCallStart { name, .. } => {
                self.output_chars += name.chars().count() as u64
            }
            ChatEvent::ToolCallDelta { arguments, .. } => {
                self.output_chars += arguments.chars().count() as u64
            }
            ChatEvent::Usage { usage } => self.reported = Some(*usage),
            ChatEvent::Finish { .. } | ChatEvent::Charged { .. } => {}
        }
    }

    /// The usage so far: reported, or estimated.
    pub fn usage(&self) -> Usage {
        self.reported.unwrap_or(Usage {
            input_tokens: self.prompt_estimate,
            output_tokens: self.output_chars.div_ceil(4),
        })
    }

    /// Whether the counts came from the provider.
    pub fn reported(&self) -> bool {
        self.reported.is_some()
    }
}
