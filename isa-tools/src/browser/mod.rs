//! Browser automation on Debian's Chromium through `headless_chrome`: [`ChromiumDriver`]
//! implements [`BrowserDriver`] with a bounded number of tabs, a deadline per task, and every
//! request of the browser passing the [`SsrfGuard`] through a local
//! proxy. [`browser_tools`] makes MCP tools of it.
//!
//! Chromium runs with its sandbox on, always. Its sandbox does not run as root, so a server
//! running as root starts Chromium as an unprivileged account (`nobody`), which cannot read
//! the server's database, signing key or data directory. Each task has a browser context of
//! its own (an incognito profile): cookies and storage of one caller's task are gone before
//! the next task starts.

mod launch;
mod proxy;
mod tools;

use std::{
    collections::HashMap,
    ffi::OsStr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use headless_chrome::{
    Browser, LaunchOptions, Tab,
    protocol::cdp::{Page::CaptureScreenshotFormatOption, Target},
};
use isa_core::{
    ActionOutput, BrowserAction, BrowserDriver, BrowserOutcome, BrowserTask, Error, Result,
    async_trait,
};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

pub use tools::browser_tools;

use crate::web::SsrfGuard;

/// How long disposing a task's browser context may take.
const DISPOSE_WAIT: Duration = Duration::from_secs(5);
/// How long a timed-out task waits for its closed tab's thread to end before answering anyway.
const TAB_RELEASE_WAIT: Duration = Duration::from_secs(10);

/// How the driver runs Chromium.
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// The Chromium binary.
    pub chromium: PathBuf,
    /// Tabs open at once; tasks beyond wait up to `queue_wait`, then are refused as overloaded.
    pub max_tabs: usize,
    /// How long a task may wait for a free tab.
    pub queue_wait: Duration,
    /// The longest deadline a task may ask for.
    pub max_task_timeout: Duration,
    /// Which destinations the browser may reach.
    pub guard: SsrfGuard,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            chromium: PathBuf::from("/usr/bin/chromium"),
            max_tabs: 4,
            queue_wait: Duration::from_secs(5),
            max_task_timeout: Duration::from_secs(60),
            guard: SsrfGuard::new(),
        }
    }
}

/// Runs [`BrowserTask`]s in tabs of one headless Chromium, started on first use and restarted
/// if it dies.
pub struct ChromiumDriver {
    config: BrowserConfig,
    launcher: Arc<launch::Launcher>,
    proxy: String,
    browser: Arc<Mutex<Option<Browser>>>,
    tabs: Arc<Semaphore>,
    undisposed: Arc<AtomicU64>,
}

impl ChromiumDriver {
    /// A driver; starts the guarding proxy now and Chromium on the first task.
    pub async fn new(config: BrowserConfig) -> Result<Self> {
        if !config.chromium.exists() {
            return Err(Error::Config(format!(
                "Chromium not found at {}",
                config.chromium.display()
            )));
        }
        let launcher = Arc::new(launch::Launcher::new(&config.chromium)?);
        let proxy = proxy::start(config.guard.clone())
            .await
            .map_err(|e| Error::internal(format!("cannot start the browser proxy: {e}")))?;
        Ok(ChromiumDriver {
            launcher,
            tabs: Arc::new(Semaphore::new(config.max_tabs.max(1))),
            proxy: format!("http://{proxy}"),
            browser: Arc::new(Mutex::new(None)),
            undisposed: Arc::default(),
            config,
        })
    }

    fn launch(launcher: &launch::Launcher, proxy: &str) -> Result<Browser> {
        let proxy_arg = format!("--proxy-server={proxy}");
        let args = [
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-gpu",
            // Loopback goes through the proxy too, so the guard decides about it.
            "--proxy-bypass-list=<-loopback>",
            // WebRTC may not send UDP around the proxy (STUN to any address would otherwise
            // reach what the guard refuses).
            "--webrtc-ip-handling-policy=disable_non_proxied_udp",
            proxy_arg.as_str(),
        ]
        .map(OsStr::new);
        let profile = launcher.new_profile()?;
        // Chromium's home is its profile: the unprivileged account has none of its own.
        let home = HashMap::from([("HOME".to_owned(), profile.display().to_string())]);
        let options = LaunchOptions::default_builder()
            .path(Some(launcher.program().to_path_buf()))
            .user_data_dir(Some(profile))
            .process_envs(Some(home))
            .headless(true)
            .sandbox(true)
            .idle_browser_timeout(Duration::from_secs(3600))
            .args(args.to_vec())
            .build()
            .map_err(|e| Error::Config(format!("browser options: {e}")))?;
        Browser::new(options)
            .map_err(|e| Error::Unavailable(format!("Chromium did not start: {e}")))
    }

    /// Browser contexts of finished tasks that could not be disposed (each keeps what its
    /// task stored until Chromium restarts).
    pub fn contexts_not_disposed(&self) -> u64 {
        self.undisposed.load(Ordering::Relaxed)
    }

    /// The process id of the running Chromium, once a task started it.
    pub fn chromium_pid(&self) -> Option<u32> {
        self.browser
            .lock()
            .as_ref()
            .and_then(Browser::get_process_id)
    }

    async fn check_destination(&self, url: &str) -> Result<()> {
        let parsed: reqwest::Url = url
            .parse()
            .map_err(|e| Error::invalid(format!("{url:?} is not a URL: {e}")))?;
        self.config.guard.check_url(&parsed)?;
        if let Some(url::Host::Domain(host)) = parsed.host() {
            self.config
                .guard
                .resolve(host, parsed.port_or_known_default().unwrap_or(80))
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl BrowserDriver for ChromiumDriver {
    async fn run(&self, task: BrowserTask) -> Result<BrowserOutcome> {
        self.check_destination(&task.url).await?;
        let task_url = task.url.clone();
        let timeout = task.timeout.min(self.config.max_task_timeout);
        let permit =
            tokio::time::timeout(self.config.queue_wait, self.tabs.clone().acquire_owned())
                .await
                .map_err(|_| Error::Overloaded {
                    retry_after: Duration::from_secs(2),
                })?
                .map_err(|_| Error::Unavailable("the browser is shutting down".into()))?;
        let open_tab: Arc<Mutex<Option<Arc<Tab>>>> = Arc::default();
        let (browser, launcher, proxy, tab_slot, undisposed) = (
            self.browser.clone(),
            self.launcher.clone(),
            self.proxy.clone(),
            open_tab.clone(),
            self.undisposed.clone(),
        );
        let work = tokio::task::spawn_blocking(move || {
            // The permit lives as long as the thread works, so a stuck page holds one tab, not more.
            let _permit = permit;
            let (browser, context) = {
                let mut running = browser.lock();
                let reused = running
                    .as_ref()
                    .and_then(|b| Some((b.clone(), own_context(b)?)));
                match reused {
                    Some(reused) => reused,
                    None => {
                        let fresh = Self::launch(&launcher, &proxy)?;
                        let context = own_context(&fresh).ok_or_else(|| {
                            Error::Unavailable("Chromium made no browser context".into())
                        })?;
                        *running = Some(fresh.clone());
                        (fresh, context)
                    }
                }
            };
            let outcome = open_tab_in(&browser, &context).and_then(|tab| {
                *tab_slot.lock() = Some(tab.clone());
                let outcome = run_in_tab(&tab, &task, timeout);
                let _ = tab.close(false);
                outcome
            });
            if let Err(error) = dispose_context(&browser, &context) {
                undisposed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "a task's browser context was not disposed");
            }
            outcome
        });
        let mut work = work;
        let outcome = match tokio::time::timeout(timeout + Duration::from_secs(1), &mut work).await
        {
            Ok(joined) => {
                joined.map_err(|e| Error::internal(format!("browser task panicked: {e}")))??
            }
            Err(_) => {
                // Closing the tab makes the stuck thread's next browser call fail, ending it;
                // waiting for that end frees the tab before the caller hears of the timeout,
                // so a caller who retries at once finds the tab free.
                if let Some(tab) = open_tab.lock().take() {
                    tokio::task::spawn_blocking(move || tab.close(false));
                }
                if tokio::time::timeout(TAB_RELEASE_WAIT, work).await.is_err() {
                    tracing::warn!(url = %task_url, "a timed-out browser task still holds its tab");
                }
                return Err(Error::Timeout(timeout));
            }
        };
        // Redirects to refused addresses were answered 403 by the proxy; say so clearly.
        self.check_destination(&outcome.final_url)
            .await
            .map_err(|e| {
                Error::Forbidden(format!("the page went to {}: {e}", outcome.final_url))
            })?;
        Ok(outcome)
    }
}

/// A new browser context (an incognito profile) that shares no cookies or storage with any
/// other; `None` when the browser no longer answers.
fn own_context(browser: &Browser) -> Option<String> {
    browser
        .new_context()
        .ok()
        .map(|context| context.get_id().to_owned())
}

fn open_tab_in(browser: &Browser, context: &str) -> Result<Arc<Tab>> {
    browser
        .new_tab_with_options(Target::CreateTarget {
            url: "about:blank".into(),
            left: None,
            top: None,
            width: None,
            height: None,
            window_state: None,
            browser_context_id: Some(context.to_owned()),
            enable_begin_frame_control: None,
            new_window: None,
            background: None,
            for_tab: None,
            hidden: None,
        })
        .map_err(|e| Error::Unavailable(format!("no tab: {e}")))
}

/// Disposes a task's browser context, with what it stored. Chromium accepts that command only
/// on a browser-level DevTools connection, which `headless_chrome` keeps to itself, so it goes
/// over a short connection of its own to the browser's endpoint.
fn dispose_context(browser: &Browser, context: &str) -> anyhow::Result<()> {
    let (mut socket, _) = tungstenite::connect(browser.get_ws_url())?;
    if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_ref() {
        tcp.set_read_timeout(Some(DISPOSE_WAIT))?;
    }
    let command = serde_json::json!({
        "id": 1,
        "method": "Target.disposeBrowserContext",
        "params": {"browserContextId": context},
    });
    socket.send(tungstenite::Message::text(command.to_string()))?;
    loop {
        let tungstenite::Message::Text(answer) = socket.read()? else {
            continue;
        };
        let answer: serde_json::Value = serde_json::from_str(&answer)?;
        if answer["id"] == 1 {
            let _ = socket.close(None);
            return match answer.get("error") {
                Some(error) => Err(anyhow::anyhow!("{error}")),
                None => Ok(()),
            };
        }
    }
}

fn browser_error(step: &str) -> impl Fn(anyhow::Error) -> Error + '_ {
    move |e| Error::invalid(format!("{step}: {e}"))
}

fn run_in_tab(tab: &Tab, task: &BrowserTask, timeout: Duration) -> Result<BrowserOutcome> {
    tab.set_default_timeout(timeout);
    tab.navigate_to(&task.url)
        .and_then(|t| t.wait_until_navigated())
        .map_err(browser_error("navigation failed"))?;
    let mut outputs = Vec::with_capacity(task.actions.len());
    for action in &task.actions {
        let output = match action {
            BrowserAction::Click { selector } => {
                tab.wait_for_element(selector)
                    .and_then(|e| e.click().map(drop))
                    .map_err(browser_error(&format!("click {selector}")))?;
                // A click may navigate; wait for it to settle before the next step.
                let _ = tab.wait_until_navigated();
                ActionOutput::Done
            }
            BrowserAction::Fill { selector, value } => {
                tab.wait_for_element(selector)
                    .and_then(|e| {
                        e.click()?;
                        e.type_into(value).map(drop)
                    })
                    .map_err(browser_error(&format!("fill {selector}")))?;
                ActionOutput::Done
            }
            BrowserAction::WaitFor { selector } => {
                tab.wait_for_element(selector)
                    .map_err(browser_error(&format!("wait for {selector}")))?;
                ActionOutput::Done
            }
            BrowserAction::ReadText { selector } => {
                let selector = selector.as_deref().unwrap_or("body");
                let text = tab
                    .wait_for_element(selector)
                    .and_then(|e| e.get_inner_text())
                    .map_err(browser_error(&format!("read {selector}")))?;
                ActionOutput::Text { text }
            }
            BrowserAction::Screenshot => {
                let png = tab
                    .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
                    .map_err(browser_error("screenshot"))?;
                ActionOutput::Screenshot { png }
            }
            other => return Err(Error::Unsupported(format!("browser action {other:?}"))),
        };
        outputs.push(output);
    }
    Ok(BrowserOutcome {
        final_url: tab.get_url(),
        title: tab.get_title().unwrap_or_default(),
        outputs,
    })
}
