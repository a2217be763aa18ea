//! The inference side of the embedder: runs on its own OS threads, never on the async runtime.
//!
//! Each worker owns one ONNX Runtime session. It takes a request from the bounded queue, gathers
//! whatever else is already waiting (up to [`MAX_TEXTS_PER_ROUND`] texts), tokenizes everything,
//! sorts by length and cuts batches by a token budget, so short texts are not padded to the
//! length of long ones and one caller's long batch cannot change another's vectors. A request
//! whose caller has gone (timed out, disconnected) is dropped unembedded: otherwise it keeps the
//! model busy for nobody and, while such requests fill the queue, live callers are refused.
//! The threads are joined when the embedder is dropped (see [`Workers`]).

use std::{
    borrow::Cow,
    collections::HashMap,
    ops::Range,
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
    time::Instant,
};

use crossbeam_channel::{Receiver, Sender};
use isa_core::{Error, Result};
use ort::{
    session::{Session, SessionInputValue},
    value::Tensor,
};
use tokenizers::Tokenizer;
use tokio::sync::oneshot;

use super::{EmbedderConfig, Pooling, stats::Counters};
use crate::error::ort_error;

/// Most texts one worker gathers from the queue for one round of batches.
const MAX_TEXTS_PER_ROUND: usize = 512;

/// A request waiting for a worker: texts, each with the byte ranges of its parts to pool too
/// (none for most). The reply holds, for each text in order, its vector then its parts'.
pub(super) struct Job {
    pub texts: Vec<(String, Vec<Range<usize>>)>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
    pub enqueued: Instant,
}

impl Job {
    /// How many vectors the reply holds.
    fn vectors(&self) -> usize {
        self.texts.iter().map(|(_, parts)| 1 + parts.len()).sum()
    }
}

/// The worker threads and the sending end of their queue. Dropping it closes the queue and waits
/// for each thread to finish the round it is running: a worker still running when the process
/// exits runs ONNX Runtime while the library's static state is torn down, which printed errors
/// when the server was stopped under load.
pub(super) struct Workers<J> {
    queue: Sender<J>,
    threads: Vec<JoinHandle<()>>,
}

impl<J> Workers<J> {
    /// No threads yet, and the receiving end of a queue of `capacity` jobs for them.
    pub fn new(capacity: usize) -> (Self, Receiver<J>) {
        let (queue, jobs) = crossbeam_channel::bounded(capacity);
        let workers = Workers {
            queue,
            threads: Vec::new(),
        };
        (workers, jobs)
    }

    /// Starts a thread named `name` running `work`, which should return once the queue is
    /// closed.
    pub fn spawn(&mut self, name: String, work: impl FnOnce() + Send + 'static) -> Result<()> {
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(work)
            .map_err(|e| Error::internal(format!("cannot start an embedding thread: {e}")))?;
        self.threads.push(thread);
        Ok(())
    }

    /// Where jobs are sent.
    pub fn queue(&self) -> &Sender<J> {
        &self.queue
    }
}

impl<J> Drop for Workers<J> {
    fn drop(&mut self) {
        // The workers see the queue closed once its last sender is gone: this one, swapped for
        // the sender of a queue nobody reads.
        let (unread, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.queue, unread));
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("an embedding thread panicked");
            }
        }
    }
}

/// Which optional inputs the model takes.
#[derive(Clone, Copy)]
pub(super) struct ModelInputs {
    pub attention_mask: bool,
    pub token_type_ids: bool,
}

impl ModelInputs {
    pub fn of(session: &Session) -> Result<Self> {
        let has = |name: &str| session.inputs().iter().any(|i| i.name() == name);
        if !has("input_ids") {
            return Err(Error::Config(
                "the embedding model has no `input_ids` input; it is not a BERT-style text encoder"
                    .into(),
            ));
        }
        Ok(ModelInputs {
            attention_mask: has("attention_mask"),
            token_type_ids: has("token_type_ids"),
        })
    }
}

/// One session plus what it needs to turn texts into vectors.
pub(super) struct Encoder {
    pub session: Session,
    pub tokenizer: Arc<Tokenizer>,
    pub inputs: ModelInputs,
    pub config: Arc<EmbedderConfig>,
    pub counters: Arc<Counters>,
    /// Whether the model's output is token states (pooled here), as the last run showed; a
    /// model that pools itself cannot pool parts.
    pub token_states: bool,
}

struct Tokenized {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    /// One attention mask per part: its tokens only.
    parts: Vec<Vec<i64>>,
}

impl Encoder {
    /// Serves jobs until the queue's sender is dropped.
    pub fn serve(mut self, queue: Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut jobs = Vec::new();
            let mut count = 0;
            let mut next = Some(first);
            while let Some(job) = next.take() {
                if job.reply.is_closed() {
                    self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                } else {
                    count += job.vectors();
                    jobs.push(job);
                }
                if count < MAX_TEXTS_PER_ROUND {
                    next = queue.try_recv().ok();
                }
            }
            if jobs.is_empty() {
                continue;
            }
            let started = Instant::now();
            for job in &jobs {
                let waited = started.duration_since(job.enqueued).as_nanos() as u64;
                self.counters.queue_ns.fetch_add(waited, Ordering::Relaxed);
            }
            // A text asked for by several callers in one round (many clients sending the same
            // request at once, before the query cache holds it) is embedded once.
            let mut texts: Vec<(&str, &[Range<usize>])> = Vec::new();
            let mut first_asked: HashMap<(&str, &[Range<usize>]), usize> = HashMap::new();
            let slots: Vec<usize> = jobs
                .iter()
                .flat_map(|j| j.texts.iter().map(|(t, p)| (t.as_str(), p.as_slice())))
                .map(|text| {
                    *first_asked.entry(text).or_insert_with(|| {
                        texts.push(text);
                        texts.len() - 1
                    })
                })
                .collect();
            match self.encode_with_parts(&texts) {
                Ok(vectors) => {
                    // Hand each job its texts' vectors, in order.
                    let mut slots = slots.into_iter();
                    for job in jobs {
                        let mine = slots
                            .by_ref()
                            .take(job.texts.len())
                            .flat_map(|slot| vectors[slot].iter().cloned())
                            .collect();
                        let _ = job.reply.send(Ok(mine));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for job in jobs {
                        let _ = job.reply.send(Err(Error::Internal(message.clone())));
                    }
                }
            }
        }
    }

    /// Embeds texts, batching them by length under the token budget.
    pub fn encode(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let whole: Vec<(&str, &[Range<usize>])> = texts.iter().map(|t| (*t, &[][..])).collect();
        Ok(self
            .encode_with_parts(&whole)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Embeds texts and their parts: for each text, its own vector then one per part, each part
    /// pooled from the tokens within its byte range in the same run (a part the tokenizer's
    /// truncation cut off entirely pools to a zero vector).
    fn encode_with_parts(
        &mut self,
        texts: &[(&str, &[Range<usize>])],
    ) -> Result<Vec<Vec<Vec<f32>>>> {
        let started = Instant::now();
        let tokenized = texts
            .iter()
            .map(|&(text, parts)| {
                // Offsets are only tracked when parts need them.
                let encoding = if parts.is_empty() {
                    self.tokenizer.encode_fast(text, true)
                } else {
                    self.tokenizer.encode(text, true)
                }
                .map_err(|e| ort_error("tokenization failed", e))?;
                let special = encoding.get_special_tokens_mask();
                let parts = parts
                    .iter()
                    .map(|part| {
                        encoding
                            .get_offsets()
                            .iter()
                            .zip(special)
                            .map(|(&(start, end), &special)| {
                                let inside = start >= part.start && end <= part.end;
                                i64::from(special == 0 && inside)
                            })
                            .collect()
                    })
                    .collect();
                Ok(Tokenized {
                    ids: encoding.get_ids().to_vec(),
                    type_ids: encoding.get_type_ids().to_vec(),
                    parts,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.counters
            .tokenize_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);

        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokenized[i].ids.len());

        let started = Instant::now();
        let mut vectors: Vec<Vec<Vec<f32>>> = vec![Vec::new(); texts.len()];
        let budget = self.config.batch_token_budget.max(1);
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && (end + 1 - start) * tokenized[order[end]].ids.len() <= budget
            {
                end += 1;
            }
            let batch: Vec<&Tokenized> = order[start..end].iter().map(|&i| &tokenized[i]).collect();
            for (slot, vector) in order[start..end].iter().zip(self.run_batch(&batch)?) {
                vectors[*slot] = vector;
            }
            start = end;
        }
        self.counters
            .inference_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.counters
            .texts
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        Ok(vectors)
    }

    /// One inference call over texts padded to the longest among them: for each text, its
    /// vector then its parts'.
    fn run_batch(&mut self, batch: &[&Tokenized]) -> Result<Vec<Vec<Vec<f32>>>> {
        let rows = batch.len();
        let width = batch.iter().map(|t| t.ids.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        let mut types = vec![0i64; rows * width];
        for (r, t) in batch.iter().enumerate() {
            for (c, (&id, &ty)) in t.ids.iter().zip(&t.type_ids).enumerate() {
                ids[r * width + c] = i64::from(id);
                mask[r * width + c] = 1;
                types[r * width + c] = i64::from(ty);
            }
        }
        let shape = [rows, width];
        let tensor = |data: Vec<i64>| -> Result<SessionInputValue<'static>> {
            Ok(Tensor::from_array((shape, data))
                .map_err(|e| ort_error("building an input tensor", e))?
                .into())
        };
        let mut inputs: Vec<(Cow<'static, str>, SessionInputValue<'static>)> =
            vec![("input_ids".into(), tensor(ids)?)];
        if self.inputs.attention_mask {
            inputs.push(("attention_mask".into(), tensor(mask.clone())?));
        }
        if self.inputs.token_type_ids {
            inputs.push(("token_type_ids".into(), tensor(types)?));
        }
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| ort_error("ONNX Runtime inference failed", e))?;
        let (out_shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| ort_error("reading the model output", e))?;
        let dims = self.config.dimensions;
        let pooled: Vec<Vec<Vec<f32>>> = match **out_shape {
            // Token states: pool them.
            [r, w, d] if r as usize == rows && w as usize == width && d as usize == dims => {
                self.token_states = true;
                (0..rows)
                    .map(|r| {
                        let states = &data[r * width * dims..(r + 1) * width * dims];
                        let masks = std::iter::once(&mask[r * width..(r + 1) * width])
                            .chain(batch[r].parts.iter().map(Vec::as_slice));
                        masks
                            .map(|mask| pool(states, mask, dims, self.config.pooling))
                            .collect()
                    })
                    .collect()
            }
            // Already one vector per text.
            [r, d] if r as usize == rows && d as usize == dims => {
                self.token_states = false;
                if batch.iter().any(|t| !t.parts.is_empty()) {
                    return Err(Error::internal(
                        "the embedding model pools its own output: parts cannot be pooled",
                    ));
                }
                data.chunks_exact(dims).map(|v| vec![v.to_vec()]).collect()
            }
            ref other => {
                return Err(Error::Config(format!(
                    "the embedding model's output has shape {other:?}, expected [{rows}, {width}, {dims}] or [{rows}, {dims}]; \
                     is `dimensions` ({dims}) right for this model?"
                )));
            }
        };
        Ok(if self.config.normalize {
            pooled
                .into_iter()
                .map(|vectors| vectors.into_iter().map(normalize).collect())
                .collect()
        } else {
            pooled
        })
    }
}

/// Pools one text's token states (`width x dims`, row-major) into one vector.
fn pool(states: &[f32], mask: &[i64], dims: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => states[..dims].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0f32; dims];
            let mut count = 0f32;
            for (token, &m) in states.chunks_exact(dims).zip(mask) {
                if m != 0 {
                    for (s, x) in sum.iter_mut().zip(token) {
                        *s += x;
                    }
                    count += 1.0;
                }
            }
            let count = count.max(1.0);
            sum.iter_mut().for_each(|s| *s /= count);
            sum
        }
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
pub(crate) fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        // Two tokens of dims 2, then one padding token with large values.
        let states = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let pooled = pool(&states, &[1, 1, 0], 2, Pooling::Mean);
        assert_eq!(pooled, vec![2.0, 3.0]);
        assert_eq!(pool(&states, &[1, 1, 0], 2, Pooling::Cls), vec![1.0, 2.0]);
    }

    #[test]
    fn dropping_the_workers_waits_for_the_round_they_are_running() {
        use std::{
            sync::atomic::{AtomicUsize, Ordering},
            time::Duration,
        };
        let finished = Arc::new(AtomicUsize::new(0));
        let (mut workers, jobs) = Workers::new(4);
        for n in 0..2 {
            let (jobs, finished) = (jobs.clone(), finished.clone());
            let work = move || {
                while let Ok(()) = jobs.recv() {
                    std::thread::sleep(Duration::from_millis(200));
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            };
            workers.spawn(format!("test-worker-{n}"), work).unwrap();
        }
        workers.queue().send(()).unwrap();
        workers.queue().send(()).unwrap();
        drop(workers);
        assert_eq!(
            finished.load(Ordering::SeqCst),
            2,
            "both rounds ran to their end"
        );
    }

    #[test]
    fn normalize_gives_unit_length() {
        let v = normalize(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalize(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
