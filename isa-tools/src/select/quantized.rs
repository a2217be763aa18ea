//! Exact dense top-k that reads a quarter of the memory: every row is scanned as int8 codes,
//! and only the rows that could still be in the top k are scored again in full precision.
//!
//! For a unit query `q` and a row `x` with int8 approximations `q̂` and `x̂`,
//! `|q·x − q̂·x̂| ≤ ‖q‖‖x − x̂‖ + ‖q − q̂‖‖x̂‖` (Cauchy–Schwarz), a bound known per row. An item
//! whose approximate score plus its bound falls below the k-th best approximate score minus
//! that item's bound cannot be in the top k, so skipping it changes nothing: the result is the
//! same items, with the same full-precision scores, as scoring every row in f32. A 10k x 384
//! index is 3.8 MB of codes instead of 15 MB of floats, which is what the scan is bound by.

use super::kernel::{Int8Query, dot, dot_rows_i8};

/// Margin for floating-point rounding in the bounds and in the full-precision dot products.
const ROUNDING_MARGIN: f32 = 1e-4;

/// Codes larger than one core's L2 cache (2 MiB on the machines we measure on) are scanned in as
/// many parts as there are cores: each core then reads its part from its own cache, and the
/// cores together read twice the bandwidth of one.
const PARALLEL_MIN_BYTES: usize = 2 << 20;

/// Rows scored at a time, so their integer dot products stay in L1.
const BLOCK_ROWS: usize = 256;

/// Int8 codes of unit vectors, with what the bound needs per row.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    codes: Vec<i8>,
    /// The sum of each row's codes, for the VNNI kernel.
    sums: Vec<i32>,
    scales: Vec<f32>,
    /// `‖x − x̂‖` per row.
    errors: Vec<f32>,
    /// `‖x̂‖` per row.
    norms: Vec<f32>,
}

/// Symmetric int8 codes of `v` and their scale: `v ≈ scale x codes`.
fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let codes = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
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

impl QuantizedRows {
    /// Codes for a row-major matrix of `dims` columns.
    pub fn build(vectors: &[f32], dims: usize) -> Self {
        let mut rows = QuantizedRows::default();
        if dims == 0 {
            return rows;
        }
        for v in vectors.chunks_exact(dims) {
            let (codes, scale) = quantize(v);
            let (error, norm) = error_and_norm(v, &codes, scale);
            rows.sums.push(codes.iter().map(|&c| i32::from(c)).sum());
            rows.codes.extend(codes);
            rows.scales.push(scale);
            rows.errors.push(error);
            rows.norms.push(norm);
        }
        rows
    }

    /// Folds the approximate score of every row for `query` into `approx` and its bound into
    /// `bounds`, keeping each row's best: the exact score, clamped to `[0, 1]` and multiplied by
    /// `weight`, lies within `approx ± bounds`. Clamping and the weight are monotone and shrink
    /// distances, so the bounds carry over.
    pub fn fold_approximate(
        &self,
        query: &[f32],
        weight: f32,
        approx: &mut [f32],
        bounds: &mut [f32],
    ) {
        let dims = query.len();
        let (codes, scale) = quantize(query);
        let (query_error, _) = error_and_norm(query, &codes, scale);
        let query_norm = query.iter().map(|x| x * x).sum::<f32>().sqrt();
        let codes = Int8Query::new(codes);
        // Folds rows `first ..` into `approx` and `bounds`, which start at row `first`.
        let fold = |first: usize, approx: &mut [f32], bounds: &mut [f32]| {
            let mut dots = [0i32; BLOCK_ROWS];
            let blocks = approx
                .chunks_mut(BLOCK_ROWS)
                .zip(bounds.chunks_mut(BLOCK_ROWS));
            for (block, (approx, bounds)) in blocks.enumerate() {
                let start = first + block * BLOCK_ROWS;
                let rows = start..start + approx.len();
                let dots = &mut dots[..rows.len()];
                dot_rows_i8(
                    &self.codes[rows.start * dims..rows.end * dims],
                    &codes,
                    &self.sums[rows.clone()],
                    dots,
                );
                let per_row = self.scales[rows.clone()]
                    .iter()
                    .zip(&self.errors[rows.clone()])
                    .zip(&self.norms[rows]);
                let folded = approx.iter_mut().zip(bounds.iter_mut()).zip(dots.iter());
                for (((approx, bound), &dot), ((&row_scale, &error), &norm)) in folded.zip(per_row)
                {
                    let score = weight * (dot as f32 * row_scale * scale).clamp(0.0, 1.0);
                    *approx = approx.max(score);
                    let row_bound = query_norm * error + query_error * norm + ROUNDING_MARGIN;
                    *bound = bound.max(weight * row_bound);
                }
            }
        };
        let parts = rayon::current_num_threads();
        if self.codes.len() < PARALLEL_MIN_BYTES || parts < 2 {
            return fold(0, approx, bounds);
        }
        // Part `i` is always scanned by thread `i` of the pool, so a core keeps finding its part
        // in its own cache from one query to the next.
        let rows_per_part = approx.len().div_ceil(parts);
        let work: Vec<parking_lot::Mutex<(&mut [f32], &mut [f32])>> = approx
            .chunks_mut(rows_per_part)
            .zip(bounds.chunks_mut(rows_per_part))
            .map(parking_lot::Mutex::new)
            .collect();
        rayon::broadcast(|thread| {
            if let Some(part) = work.get(thread.index()) {
                let (approx, bounds) = &mut *part.lock();
                fold(thread.index() * rows_per_part, approx, bounds);
            }
        });
    }
}

/// Rows that may be among the `k` best of `scores`, given each score's `bounds`, among the rows
/// `admitted`: every row whose upper bound reaches the k-th best lower bound.
pub(crate) fn candidates(
    scores: &[f32],
    bounds: &[f32],
    admitted: impl Fn(usize) -> bool,
    k: usize,
) -> Vec<usize> {
    if k == 0 {
        return Vec::new();
    }
    // The k-th largest lower bound: the k largest seen so far, kept sorted, largest first. Most
    // rows fall below the smallest of them and cost one comparison.
    let mut largest: Vec<f32> = Vec::with_capacity(k + 1);
    let mut threshold = f32::MIN;
    for (i, (&score, &bound)) in scores.iter().zip(bounds).enumerate() {
        let low = score - bound;
        if (largest.len() == k && low <= threshold) || !admitted(i) {
            continue;
        }
        let at = largest.partition_point(|&kept| kept >= low);
        largest.insert(at, low);
        largest.truncate(k);
        if largest.len() == k {
            threshold = largest[k - 1];
        }
    }
    scores
        .iter()
        .zip(bounds)
        .enumerate()
        .filter_map(|(i, (&score, &bound))| {
            (score + bound >= threshold && admitted(i)).then_some(i)
        })
        .collect()
}

/// The full-precision dot product of row `i`.
pub(crate) fn exact(vectors: &[f32], dims: usize, i: usize, query: &[f32]) -> f32 {
    dot(&vectors[i * dims..(i + 1) * dims], query)
}
