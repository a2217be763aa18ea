//! Exact dense top-k that reads a quarter of the memory: every row is scanned as int8 codes,
//! and only the rows that could still be in the top k are scored again in full precision.
//!
//! For a unit query `q` and a row `x` with int8 approximations `q̂` and `x̂`,
//! `|q·x − q̂·x̂| ≤ ‖q‖‖x − x̂‖ + ‖q − q̂‖‖x̂‖` (Cauchy–Schwarz), a bound known per row. An item
//! whose upper bound (approximate score plus bound) falls below the k-th best lower bound
//! cannot be in the top k, so skipping it changes nothing: the result is the same items, with
//! the same full-precision scores, as scoring every row in f32. A 10k x 384 index is 3.8 MB of
//! codes instead of 15 MB of floats, which is what the scan is bound by. Each core keeps the
//! k-th best lower bound of its own part as it scans, so a row is dropped as soon as it is
//! scored and only the few that may qualify are kept.

use std::ops::Range;

use super::kernel::{
    BLOCK_ROWS, Int8Query, block_bytes, code_position, dot, dot_blocks, query_code_limit,
    stored_code,
};

/// Margin for floating-point rounding in the bounds and in the full-precision dot products.
const ROUNDING_MARGIN: f32 = 1e-4;

/// Codes larger than one core's L2 cache (2 MiB on the machines we measure on) are scanned in as
/// many parts as there are cores: each core then reads its part from its own cache, and the
/// cores together read twice the bandwidth of one.
const PARALLEL_MIN_BYTES: usize = 2 << 20;

/// Rows scored at a time, so their scores stay in L1 (a multiple of the kernel's blocks).
const CHUNK_ROWS: usize = 256;

/// Int8 codes of unit vectors, laid out for [`dot_blocks`], with what the bound needs per row.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    dims: usize,
    rows: usize,
    /// Whole blocks of 16 rows; rows past `rows` are zero codes.
    blocks: Vec<u8>,
    /// Per row, padded with zeros to whole blocks: `x ≈ scale x codes`, ‖x − x̂‖ and ‖x̂‖.
    scales: Vec<f32>,
    errors: Vec<f32>,
    norms: Vec<f32>,
    /// The largest code of a query's, as the scan's kernel takes them.
    pub(crate) query_limit: i8,
}

/// Symmetric int8 codes of `v` within `±limit` and their scale: `v ≈ scale x codes`.
fn quantize(v: &[f32], limit: i8) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 {
        max / f32::from(limit)
    } else {
        1.0
    };
    // Rounds half away from zero by truncating `r ± 0.5`: `f32::round` is a call into libm on
    // the baseline x86-64 target, and quantising each query spent more time there than the scan
    // of a thousand rows. The bounds use the codes as they are, so the rounding rule only has to
    // be close.
    let codes = v
        .iter()
        .map(|x| {
            let r = x / scale;
            ((r + 0.5f32.copysign(r)) as i32).clamp(-i32::from(limit), i32::from(limit)) as i8
        })
        .collect();
    (codes, scale)
}

/// `‖v − scale x codes‖` and `‖scale x codes‖`.
fn error_and_norm(v: &[f32], codes: &[i8], scale: f32) -> (f32, f32) {
    let (mut error, mut norm) = (0f64, 0f64);
    for (&x, &c) in v.iter().zip(codes) {
        let approx = f64::from(scale) * f64::from(c);
        error += (f64::from(x) - approx).powi(2);
        norm += approx.powi(2);
    }
    (error.sqrt() as f32, norm.sqrt() as f32)
}

/// One query vector as the scan compares it: its codes, what its bound needs, and the weight
/// its scores get.
struct QueryCodes {
    codes: Int8Query,
    scale: f32,
    error: f32,
    norm: f32,
    weight: f32,
}

impl QueryCodes {
    fn new(vector: &[f32], weight: f32, limit: i8) -> Self {
        let (codes, scale) = quantize(vector, limit);
        let (error, _) = error_and_norm(vector, &codes, scale);
        QueryCodes {
            codes: Int8Query::new(codes),
            scale,
            error,
            norm: vector.iter().map(|x| x * x).sum::<f32>().sqrt(),
            weight,
        }
    }
}

/// What one part of the scan found: the k best lower bounds among its admitted rows, best
/// first, and its rows whose upper bound reached its k-th best lower bound as it went.
#[derive(Default)]
struct PartCandidates {
    best_lows: Vec<f32>,
    rows: Vec<(usize, f32)>,
}

impl PartCandidates {
    /// Adds an admitted row whose upper bound reached the threshold, and returns the new
    /// threshold: the k-th best lower bound so far, or `f32::MIN` while there are fewer.
    #[inline(never)] // the rare path, kept out of the scan's loop
    fn add(&mut self, row: usize, score: f32, bound: f32, k: usize) -> f32 {
        self.rows.push((row, score + bound));
        let low = score - bound;
        let at = self.best_lows.partition_point(|&kept| kept >= low);
        if at < k {
            self.best_lows.insert(at, low);
            self.best_lows.truncate(k);
        }
        if self.best_lows.len() == k {
            self.best_lows[k - 1]
        } else {
            f32::MIN
        }
    }
}

impl QuantizedRows {
    /// Codes for a row-major matrix of `dims` columns.
    pub fn build(vectors: &[f32], dims: usize) -> Self {
        if dims == 0 {
            return QuantizedRows::default();
        }
        let rows = vectors.len() / dims;
        let padded = rows.div_ceil(BLOCK_ROWS) * BLOCK_ROWS;
        let mut quantized = QuantizedRows {
            dims,
            rows,
            blocks: vec![stored_code(0); padded / BLOCK_ROWS * block_bytes(dims)],
            scales: vec![0.0; padded],
            errors: vec![0.0; padded],
            norms: vec![0.0; padded],
            query_limit: query_code_limit(),
        };
        for (r, v) in vectors.chunks_exact(dims).enumerate() {
            let (codes, scale) = quantize(v, i8::MAX);
            let (error, norm) = error_and_norm(v, &codes, scale);
            for (d, &code) in codes.iter().enumerate() {
                quantized.blocks[code_position(dims, r, d)] = stored_code(code);
            }
            quantized.scales[r] = scale;
            quantized.errors[r] = error;
            quantized.norms[r] = norm;
        }
        quantized
    }

    /// The rows, among those `admitted`, that may be among the `k` best for the query vectors
    /// `queries` (each with its weight), ascending: every row whose upper bound reaches the
    /// k-th best lower bound. A row's score is its best over the vectors of the exact score
    /// clamped to `[0, 1]` times the vector's weight; clamping and the weight are monotone and
    /// shrink distances, so the bounds of the int8 scores carry over.
    pub fn candidates(
        &self,
        queries: &[(&[f32], f32)],
        admitted: impl Fn(usize) -> bool + Sync,
        k: usize,
    ) -> Vec<usize> {
        if k == 0 || self.rows == 0 || queries.is_empty() {
            return Vec::new();
        }
        let queries: Vec<QueryCodes> = queries
            .iter()
            .map(|&(vector, weight)| QueryCodes::new(vector, weight, self.query_limit))
            .collect();
        let parts = rayon::current_num_threads();
        let found: Vec<PartCandidates> = if self.blocks.len() < PARALLEL_MIN_BYTES || parts < 2 {
            vec![self.scan(0..self.rows, &queries, &admitted, k)]
        } else {
            // Part `i` is always scanned by thread `i` of the pool, so a core keeps finding its
            // part in its own cache from one query to the next.
            let rows_per_part = self.rows.div_ceil(parts).next_multiple_of(BLOCK_ROWS);
            let found: Vec<parking_lot::Mutex<PartCandidates>> =
                (0..parts).map(|_| Default::default()).collect();
            rayon::broadcast(|thread| {
                let start = thread.index() * rows_per_part;
                let rows = start.min(self.rows)..(start + rows_per_part).min(self.rows);
                if let Some(part) = found.get(thread.index()) {
                    *part.lock() = self.scan(rows, &queries, &admitted, k);
                }
            });
            found
                .into_iter()
                .map(parking_lot::Mutex::into_inner)
                .collect()
        };
        let mut lows: Vec<f32> = found
            .iter()
            .flat_map(|part| part.best_lows.iter().copied())
            .collect();
        lows.sort_by(|a, b| b.total_cmp(a));
        let threshold = lows.get(k - 1).copied().unwrap_or(f32::MIN);
        found
            .into_iter()
            .flat_map(|part| part.rows)
            .filter_map(|(row, high)| (high >= threshold).then_some(row))
            .collect()
    }

    /// [`Self::candidates`] within the rows `part`, which starts at a block boundary. A part's
    /// k-th best lower bound never exceeds the whole index's, so a row below it is below the
    /// final one.
    fn scan(
        &self,
        part: Range<usize>,
        queries: &[QueryCodes],
        admitted: &impl Fn(usize) -> bool,
        k: usize,
    ) -> PartCandidates {
        let mut found = PartCandidates::default();
        let mut threshold = f32::MIN;
        let bytes = block_bytes(self.dims);
        let mut dots = [0i32; CHUNK_ROWS];
        let (mut approx, mut bounds) = ([0f32; CHUNK_ROWS], [0f32; CHUNK_ROWS]);
        for start in part.clone().step_by(CHUNK_ROWS) {
            let end = (start + CHUNK_ROWS).min(part.end);
            let padded = (end - start).next_multiple_of(BLOCK_ROWS);
            let codes = &self.blocks[start / BLOCK_ROWS * bytes..][..padded / BLOCK_ROWS * bytes];
            let per_row = start..start + padded;
            let (scales, errors, norms) = (
                &self.scales[per_row.clone()],
                &self.errors[per_row.clone()],
                &self.norms[per_row],
            );
            approx[..padded].fill(f32::MIN);
            bounds[..padded].fill(0.0);
            for query in queries {
                dot_blocks(codes, &query.codes, &mut dots[..padded]);
                let factor = query.weight * query.scale;
                let rows = approx[..padded]
                    .iter_mut()
                    .zip(&mut bounds[..padded])
                    .zip(&dots[..padded])
                    .zip(scales.iter().zip(errors).zip(norms));
                // Comparisons rather than `f32::max` and `clamp`, which would also handle NaN
                // (codes have none) and keep the loop from being vectorised.
                for (((approx, bound), &dot), ((&scale, &error), &norm)) in rows {
                    let score = dot as f32 * scale * factor;
                    let score = if score < 0.0 { 0.0 } else { score };
                    let score = if score > query.weight {
                        query.weight
                    } else {
                        score
                    };
                    *approx = if score > *approx { score } else { *approx };
                    let row_bound =
                        query.weight * (query.norm * error + query.error * norm + ROUNDING_MARGIN);
                    *bound = if row_bound > *bound {
                        row_bound
                    } else {
                        *bound
                    };
                }
            }
            // Most rows fall below the threshold: that test is all the loop does for them.
            let rows = approx.iter().zip(&bounds).take(end - start).enumerate();
            for (i, (&score, &bound)) in rows {
                if score + bound >= threshold && admitted(start + i) {
                    threshold = found.add(start + i, score, bound, k);
                }
            }
        }
        found
    }
}

/// The full-precision dot product of row `i`.
pub(crate) fn exact(vectors: &[f32], dims: usize, i: usize, query: &[f32]) -> f32 {
    dot(&vectors[i * dims..(i + 1) * dims], query)
}
