//! Questions a call asks its client ([`crate::ask`]), in both revisions, and the request state
//! that carries a 2026-07-28 call's answers from one round to the next.
//!
//! The request state is sealed with ChaCha20-Poly1305 under the server's [`StateKey`]: the
//! client can neither read it (answers may be secrets) nor change it, and the call it belongs
//! to (caller, method, name, arguments) is the associated data, so a state is refused for any
//! other caller or call. It expires after [`McpConfig::input_ttl`](super::McpConfig).

use std::{
    collections::BTreeMap,
    fmt,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use parking_lot::Mutex;
use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    digest,
    rand::{SecureRandom, SystemRandom},
};
use rmcp::{
    RoleServer,
    model::{ClientCapabilities, InputRequest, InputRequiredResult, ServerRequest},
    service::Peer,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ClientCapability, ClientChannel, ClientRequest, Error, Result};

/// The key that seals request state. Every instance behind one load balancer needs the same
/// key, since the next round of a call may reach another instance.
#[derive(Clone)]
pub struct StateKey([u8; 32]);

impl StateKey {
    /// A key derived from a secret (SHA-256 of a label and the secret).
    pub fn from_secret(secret: &str) -> Self {
        let mut input = b"isa MCP request state\0".to_vec();
        input.extend_from_slice(secret.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest::digest(&digest::SHA256, &input).as_ref());
        StateKey(key)
    }

    /// A random key, good for one process.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        // The system's random source does not fail on the platforms isa runs on; if it did,
        // a zero key would seal nothing safely, so stop.
        #[allow(clippy::expect_used)]
        SystemRandom::new()
            .fill(&mut key)
            .expect("the system random source failed");
        StateKey(key)
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(..)")
    }
}

/// Seals and opens request state.
pub(crate) struct Sealer {
    key: LessSafeKey,
    ttl: Duration,
    random: SystemRandom,
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    /// Expiry, in milliseconds since the Unix epoch.
    expires_ms: u64,
    answers: Map<String, Value>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What a request state is bound to: the caller and the request it continues.
pub(crate) fn binding(
    caller: Option<&str>,
    method: &str,
    name: &str,
    arguments: &Value,
) -> Vec<u8> {
    let text = format!(
        "{}\0{method}\0{name}\0{arguments}",
        caller.unwrap_or_default()
    );
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .to_vec()
}

impl Sealer {
    pub fn new(key: &StateKey, ttl: Duration) -> Self {
        // A 32-byte key is what ChaCha20-Poly1305 takes, so this cannot fail.
        #[allow(clippy::expect_used)]
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &key.0).expect("a 32-byte ChaCha20-Poly1305 key");
        Sealer {
            key: LessSafeKey::new(unbound),
            ttl,
            random: SystemRandom::new(),
        }
    }

    pub fn seal(&self, binding: &[u8], answers: Map<String, Value>) -> Result<String> {
        let sealed = Sealed {
            expires_ms: now_ms().saturating_add(self.ttl.as_millis() as u64),
            answers,
        };
        let mut data = serde_json::to_vec(&sealed).map_err(|e| Error::internal(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| Error::internal("the system random source failed"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding),
                &mut data,
            )
            .map_err(|_| Error::internal("request state could not be sealed"))?;
        let mut token = nonce.to_vec();
        token.append(&mut data);
        Ok(URL_SAFE_NO_PAD.encode(token))
    }

    /// The answers a state carries; refused when it was not sealed by this key for this call,
    /// or has expired.
    pub fn open(&self, binding: &[u8], token: &str) -> Result<Map<String, Value>> {
        let refused = || {
            Error::invalid(
                "requestState failed verification: it was changed, or belongs to another call",
            )
        };
        let mut bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN {
            return Err(refused());
        }
        let mut data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| refused())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(binding), &mut data)
            .map_err(|_| refused())?;
        let sealed: Sealed = serde_json::from_slice(plain).map_err(|_| refused())?;
        if now_ms() >= sealed.expires_ms {
            return Err(Error::invalid(
                "requestState has expired: call again without it to start over",
            ));
        }
        Ok(sealed.answers)
    }
}

fn declares(declared: &ClientCapabilities, capability: ClientCapability) -> bool {
    match capability {
        ClientCapability::Elicitation => declared.elicitation.is_some(),
        ClientCapability::Sampling => declared.sampling.is_some(),
        ClientCapability::Roots => declared.roots.is_some(),
    }
}

/// The `ClientCapabilities` naming the ones of `required` the client did not declare.
pub(crate) fn missing(
    declared: &ClientCapabilities,
    required: &[ClientCapability],
) -> Option<ClientCapabilities> {
    let missing: Map<String, Value> = required
        .iter()
        .filter(|c| !declares(declared, **c))
        .map(|c| (c.name().to_owned(), Value::Object(Map::new())))
        .collect();
    if missing.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Object(missing)).ok()
}

fn input_request(request: &ClientRequest) -> Result<InputRequest> {
    serde_json::from_value(request.to_json())
        .map_err(|e| Error::invalid(format!("not a valid {} request: {e}", request.method())))
}

/// 2025-11-25 sessions: each question is a request from server to client, answered on the
/// session while the call waits.
pub(crate) struct SessionChannel {
    pub peer: Peer<RoleServer>,
    pub declared: ClientCapabilities,
}

#[async_trait]
impl ClientChannel for SessionChannel {
    fn supports(&self, capability: ClientCapability) -> bool {
        declares(&self.declared, capability)
    }

    async fn ask(&self, _key: &str, request: ClientRequest) -> Result<Value> {
        let request = match input_request(&request)? {
            InputRequest::CreateMessage(r) => ServerRequest::CreateMessageRequest(r),
            InputRequest::Elicitation(r) => ServerRequest::ElicitRequest(r),
            InputRequest::ListRoots(r) => ServerRequest::ListRootsRequest(r),
            other => return Err(Error::internal(format!("unexpected request {other:?}"))),
        };
        let answer = self
            .peer
            .send_request(request)
            .await
            .map_err(|e| Error::Upstream {
                service: "the MCP client".into(),
                status: None,
                message: e.to_string(),
                retryable: false,
            })?;
        serde_json::to_value(answer).map_err(|e| Error::internal(e.to_string()))
    }
}

/// 2026-07-28: the answers come with the request (this round's `inputResponses` and those of
/// earlier rounds, from the request state); a question without an answer is recorded, and the
/// call ends with an input-required result asking every recorded question.
/// The same channel serves a call running as a task: its answers are the task's, and its
/// open questions are the task's `inputRequests`.
pub(crate) struct RoundTrip {
    declared: ClientCapabilities,
    answers: Map<String, Value>,
    phase: TaskPhase,
    /// Answers the call used: carried to the next round.
    used: Mutex<Map<String, Value>>,
    pending: Mutex<BTreeMap<String, ClientRequest>>,
    /// Whether the call reached `continue_as_task` in a request that may become a task.
    escalated: AtomicBool,
}

/// Whether a call can go on as a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskPhase {
    /// No: the tool does not support tasks, or the client does not accept them.
    Never,
    /// In a request that becomes a task where the tool continues as one.
    Request,
    /// Running as the task.
    Task,
}

impl RoundTrip {
    pub fn new(
        declared: ClientCapabilities,
        answers: Map<String, Value>,
        phase: TaskPhase,
    ) -> Self {
        RoundTrip {
            declared,
            answers,
            phase,
            used: Mutex::new(Map::new()),
            pending: Mutex::new(BTreeMap::new()),
            escalated: AtomicBool::new(false),
        }
    }

    /// Whether the call stopped to go on as a task.
    pub fn escalated(&self) -> bool {
        self.escalated.load(Ordering::SeqCst)
    }

    /// The answers the call used.
    pub fn used(&self) -> Map<String, Value> {
        self.used.lock().clone()
    }

    /// The questions left open, in MCP's `inputRequests` shape.
    pub fn pending(&self) -> Map<String, Value> {
        self.pending
            .lock()
            .iter()
            .map(|(key, request)| (key.clone(), request.to_json()))
            .collect()
    }

    /// When the call asked what it was not told: the result that asks it, with the state
    /// that carries the answers it used.
    pub fn input_required(
        &self,
        sealer: &Sealer,
        binding: &[u8],
    ) -> Result<Option<InputRequiredResult>> {
        let pending = self.pending.lock();
        if pending.is_empty() {
            return Ok(None);
        }
        let requests = pending
            .iter()
            .map(|(key, request)| Ok((key.clone(), input_request(request)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        let state = sealer.seal(binding, self.used.lock().clone())?;
        Ok(Some(InputRequiredResult::new(Some(requests), Some(state))))
    }
}

#[async_trait]
impl ClientChannel for RoundTrip {
    fn supports(&self, capability: ClientCapability) -> bool {
        declares(&self.declared, capability)
    }

    async fn ask(&self, key: &str, request: ClientRequest) -> Result<Value> {
        if let Some(answer) = self.answers.get(key) {
            self.used.lock().insert(key.to_owned(), answer.clone());
            return Ok(answer.clone());
        }
        self.pending.lock().insert(key.to_owned(), request);
        Err(Error::Suspended)
    }

    async fn continue_as_task(&self) -> Result<()> {
        if self.phase != TaskPhase::Request {
            return Ok(());
        }
        self.escalated.store(true, Ordering::SeqCst);
        Err(Error::Suspended)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answers() -> Map<String, Value> {
        json!({"user_name": {"action": "accept", "content": {"name": "a secret"}}})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_sealed_state_opens_for_its_call_only_and_hides_its_answers() {
        let sealer = Sealer::new(&StateKey::from_secret("s"), Duration::from_secs(60));
        let call = binding(Some("alice"), "tools/call", "greet", &json!({"x": 1}));
        let token = sealer.seal(&call, answers()).unwrap();
        assert_eq!(sealer.open(&call, &token).unwrap(), answers());
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("a secret"));

        for other in [
            binding(Some("bob"), "tools/call", "greet", &json!({"x": 1})),
            binding(Some("alice"), "prompts/get", "greet", &json!({"x": 1})),
            binding(Some("alice"), "tools/call", "greet", &json!({"x": 2})),
        ] {
            assert!(sealer.open(&other, &token).is_err());
        }
        let other_key = Sealer::new(&StateKey::from_secret("t"), Duration::from_secs(60));
        assert!(other_key.open(&call, &token).is_err());
    }

    #[test]
    fn a_changed_or_expired_state_is_refused() {
        let sealer = Sealer::new(&StateKey::random(), Duration::from_secs(60));
        let call = binding(None, "tools/call", "greet", &json!({}));
        let token = sealer.seal(&call, answers()).unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in [0, NONCE_LEN, raw.len() - 1] {
            raw[i] ^= 1;
            let changed = URL_SAFE_NO_PAD.encode(&raw);
            assert!(sealer.open(&call, &changed).is_err(), "byte {i} flipped");
            raw[i] ^= 1;
        }
        assert!(sealer.open(&call, &format!("{token}-TAMPERED")).is_err());
        assert!(sealer.open(&call, "").is_err());

        let expiring = Sealer::new(&StateKey::random(), Duration::ZERO);
        let token = expiring.seal(&call, answers()).unwrap();
        let error = expiring.open(&call, &token).unwrap_err();
        assert!(error.to_string().contains("expired"), "{error}");
    }
}
