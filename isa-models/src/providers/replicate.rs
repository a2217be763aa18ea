//! Replicate's predictions for image models (`black-forest-labs/flux-schnell`, …): created
//! with `Prefer: wait`, then polled until they finish or the deadline passes.

use std::time::Duration;

use async_trait::async_trait;
use isa_core::{
    Capabilities, ChatRequest, ChatStream, Error, GeneratedImage, ImageRequest, ModelProvider,
    Result,
};
use serde_json::{Value, json};

use super::http::Endpoint;

/// Replicate's API base.
pub const REPLICATE_BASE_URL: &str = "https://api.replicate.com/v1";

/// How long the creating request may wait for the prediction (Replicate allows 1 to 60 s).
const PREFER_WAIT_SECONDS: u32 = 60;

/// Replicate's predictions API.
#[derive(Debug, Clone)]
pub struct Replicate {
    endpoint: Endpoint,
    api_key: String,
    deadline: Duration,
    poll_every: Duration,
}

impl Replicate {
    /// Replicate at `base_url` (normally [`REPLICATE_BASE_URL`]); a prediction not finished
    /// after `deadline` is cancelled and answered with a timeout.
    pub fn new(name: &str, base_url: &str, api_key: String, deadline: Duration) -> Result<Self> {
        Ok(Replicate {
            endpoint: Endpoint::new(name, base_url)?,
            api_key,
            deadline,
            poll_every: Duration::from_millis(500),
        })
    }

    /// How often an unfinished prediction is asked about.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    async fn prediction(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        self.endpoint
            .send_json(request.bearer_auth(&self.api_key))
            .await
    }

    fn images(&self, prediction: &Value) -> Result<Vec<GeneratedImage>> {
        let urls: Vec<String> = match &prediction["output"] {
            Value::String(url) => vec![url.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if urls.is_empty() {
            return Err(self.endpoint.malformed("prediction: no output URLs"));
        }
        Ok(urls
            .into_iter()
            .map(|url| GeneratedImage::Url { url })
            .collect())
    }
}

#[async_trait]
impl ModelProvider for Replicate {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: true,
            ..Default::default()
        }
    }

    async fn chat_stream(&self, _request: ChatRequest) -> Result<ChatStream> {
        Err(Error::Unsupported(format!(
            "{} serves image models only",
            self.name()
        )))
    }

    async fn generate_image(&self, request: ImageRequest) -> Result<Vec<GeneratedImage>> {
        let mut input = json!({"prompt": request.prompt});
        if request.n > 1 {
            input["num_outputs"] = json!(request.n);
        }
        if let Some(size) = &request.size {
            input["aspect_ratio"] = json!(aspect_ratio(size)?);
        }
        if let Some(Value::Object(extra)) = &request.extra {
            for (key, value) in extra {
                input[key] = value.clone();
            }
        }
        let started = tokio::time::Instant::now();
        let create = self
            .endpoint
            .client
            .post(
                self.endpoint
                    .url(&format!("/models/{}/predictions", request.model)),
            )
            .header("Prefer", format!("wait={PREFER_WAIT_SECONDS}"))
            .json(&json!({"input": input}));
        let mut prediction = self.prediction(create).await?;
        loop {
            match prediction["status"].as_str() {
                Some("succeeded") => return self.images(&prediction),
                Some("failed") | Some("canceled") | Some("aborted") => {
                    let message = prediction["error"].as_str().unwrap_or("prediction failed");
                    return Err(Error::Upstream {
                        service: self.endpoint.name.clone(),
                        status: None,
                        message: message.to_owned(),
                        retryable: false,
                    });
                }
                _ => {}
            }
            let get = prediction["urls"]["get"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    prediction["id"]
                        .as_str()
                        .map(|id| self.endpoint.url(&format!("/predictions/{id}")))
                })
                .ok_or_else(|| self.endpoint.malformed("prediction: no id"))?;
            if started.elapsed() + self.poll_every > self.deadline {
                if let Some(cancel) = prediction["urls"]["cancel"].as_str() {
                    let _ = self.prediction(self.endpoint.client.post(cancel)).await;
                }
                return Err(Error::Timeout(self.deadline));
            }
            tokio::time::sleep(self.poll_every).await;
            prediction = self.prediction(self.endpoint.client.get(get)).await?;
        }
    }
}

/// OpenAI-style `WIDTHxHEIGHT` as the aspect ratio Replicate's image models take.
fn aspect_ratio(size: &str) -> Result<String> {
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| *w > 0 && *h > 0)
        .ok_or_else(|| Error::invalid(format!("size {size:?} is not WIDTHxHEIGHT")))?;
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let g = gcd(w, h);
    Ok(format!("{}:{}", w / g, h / g))
}

#[cfg(test)]
mod tests {
    use super::aspect_ratio;

    #[test]
    fn sizes_become_aspect_ratios() {
        assert_eq!(aspect_ratio("1024x1024").unwrap(), "1:1");
        assert_eq!(aspect_ratio("1792x1024").unwrap(), "7:4");
        assert!(aspect_ratio("big").is_err());
        assert!(aspect_ratio("0x10").is_err());
    }
}
