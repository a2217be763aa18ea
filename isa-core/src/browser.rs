//! Browser automation as whole tasks with a deadline.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One step of a browser task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BrowserAction {
    /// Clicks the first element matching a CSS selector.
    Click {
        /// CSS selector.
        selector: String,
    },
    /// Types a value into the first element matching a CSS selector.
    Fill {
        /// CSS selector.
        selector: String,
        /// The text to type.
        value: String,
    },
    /// Waits until an element matching a CSS selector exists.
    WaitFor {
        /// CSS selector.
        selector: String,
    },
    /// Reads the visible text of an element (the whole page when `selector` is `None`).
    ReadText {
        /// CSS selector, or the page body.
        selector: Option<String>,
    },
    /// Takes a PNG screenshot of the viewport.
    Screenshot,
}

/// A task: open `url`, then run `actions` in order, all within `timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrowserTask {
    /// The page to open (checked by the SSRF guard before the browser sees it).
    pub url: String,
    /// Steps to run after the page loads.
    pub actions: Vec<BrowserAction>,
    /// Deadline for the whole task, after which the tab is closed.
    pub timeout: Duration,
}

/// What one action produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActionOutput {
    /// The action had no output (click, fill, wait).
    Done,
    /// Text read from the page.
    Text {
        /// The text.
        text: String,
    },
    /// A PNG screenshot.
    Screenshot {
        /// PNG bytes.
        png: Vec<u8>,
    },
}

/// The result of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrowserOutcome {
    /// The URL after navigation and redirects.
    pub final_url: String,
    /// The page title.
    pub title: String,
    /// One output per action, in order.
    pub outputs: Vec<ActionOutput>,
}

/// Runs browser tasks, each on its own tab from a bounded pool.
///
/// A task is the unit because a stuck page must never hold the server: the driver enforces
/// [`BrowserTask::timeout`] and answers [`Error::Overloaded`](crate::Error::Overloaded) when the
/// pool is busy. `isa-tools` implements it on Chromium through `headless_chrome`.
///
/// ```
/// use isa_core::*;
///
/// /// Pretends every page is empty; for tests of code that uses a driver.
/// struct Blank;
///
/// #[async_trait]
/// impl BrowserDriver for Blank {
///     async fn run(&self, task: BrowserTask) -> Result<BrowserOutcome> {
///         let outputs = task.actions.iter().map(|a| match a {
///             BrowserAction::ReadText { .. } => ActionOutput::Text { text: String::new() },
///             _ => ActionOutput::Done,
///         }).collect();
///         Ok(BrowserOutcome { final_url: task.url, title: String::new(), outputs })
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let task = BrowserTask {
///     url: "https://example.org/".into(),
///     actions: vec![BrowserAction::ReadText { selector: None }],
///     timeout: std::time::Duration::from_secs(10),
/// };
/// let outcome = Blank.run(task).await.unwrap();
/// assert_eq!(outcome.outputs.len(), 1);
/// # });
/// ```
#[async_trait]
pub trait BrowserDriver: Send + Sync {
    /// Runs one task to completion or to its deadline.
    async fn run(&self, task: BrowserTask) -> Result<BrowserOutcome>;
}
