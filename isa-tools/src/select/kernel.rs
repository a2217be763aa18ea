//! Dot products of a query against a row-major matrix: the inner loop of dense selection.
//!
//! Floats: the same safe Rust loop is compiled twice, for the baseline x86-64 (SSE2) and with
//! AVX2 and FMA enabled (8-wide instead of 4-wide vectors), chosen at run time when the CPU has
//! them, so one binary runs everywhere and uses what the EC2 host offers. Int8 codes: AVX-512
//! VNNI where the CPU has it, else AVX2 (for queries of 7-bit codes), both written with
//! intrinsics (the auto-vectorised loop uses neither `vpdpbusd` nor `vpmaddubsw`), else the
//! portable loop. The `unsafe` here is calling `#[target_feature]` functions once the features
//! are detected, and the kernels' loads and stores, each with its reason. Tests compare every
//! kernel the CPU runs with a naive sum.

/// Lanes accumulated in parallel; 16 floats fill two AVX registers.
const LANES: usize = 16;

/// Matrices at least this many floats are scanned by several threads at once: one core cannot
/// stream 10k x 384 floats from memory as fast as two.
const PARALLEL_MIN_FLOATS: usize = 1 << 20;

/// Writes `out[i] = dot(matrix[i], query)` for every row, splitting large matrices across
/// rayon's threads (one per core).
pub(crate) fn dot_rows(matrix: &[f32], query: &[f32], out: &mut [f32]) {
    use rayon::prelude::*;
    let parts = rayon::current_num_threads();
    if parts < 2 || matrix.len() < PARALLEL_MIN_FLOATS || query.is_empty() {
        return dot_rows_one_thread(matrix, query, out);
    }
    let rows_per_part = out.len().div_ceil(parts);
    matrix
        .par_chunks(rows_per_part * query.len())
        .zip(out.par_chunks_mut(rows_per_part))
        .for_each(|(rows, out)| dot_rows_one_thread(rows, query, out));
}

/// [`dot_rows`] on the calling thread, with the fastest kernel the CPU supports.
fn dot_rows_one_thread(matrix: &[f32], query: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe {
            dot_rows_avx2(matrix, query, out)
        };
        return;
    }
    dot_rows_portable(matrix, query, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_rows_avx2(matrix: &[f32], query: &[f32], out: &mut [f32]) {
    dot_rows_portable(matrix, query, out)
}

#[inline(always)]
fn dot_rows_portable(matrix: &[f32], query: &[f32], out: &mut [f32]) {
    let dims = query.len();
    if dims == 0 {
        out.fill(0.0);
        return;
    }
    for (row, score) in matrix.chunks_exact(dims).zip(out.iter_mut()) {
        *score = dot(row, query);
    }
}

/// The dot product of two rows, as [`dot_rows`] computes it.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Rows per block of the int8 layout: one AVX-512 register holds one i32 sum per row.
pub(crate) const BLOCK_ROWS: usize = 16;

/// Codes per row and block that one `vpdpbusd` lane multiplies and adds.
const GROUP: usize = 4;

/// Bytes of one block: `groups` of 16 rows x 4 codes.
pub(crate) fn block_bytes(dims: usize) -> usize {
    dims.div_ceil(GROUP) * BLOCK_ROWS * GROUP
}

/// Where code `dim` of row `row` sits in the int8 layout (see [`dot_blocks`]).
pub(crate) fn code_position(dims: usize, row: usize, dim: usize) -> usize {
    let (block, lane) = (row / BLOCK_ROWS, row % BLOCK_ROWS);
    block * block_bytes(dims) + (dim / GROUP) * BLOCK_ROWS * GROUP + lane * GROUP + dim % GROUP
}

/// The byte stored for an int8 code: `code + 128`, the unsigned operand `vpdpbusd` takes.
pub(crate) fn stored_code(code: i8) -> u8 {
    (code as u8) ^ 0x80
}

/// The largest query code the fastest kernel this CPU runs takes: 127, or 63 on AVX2 without
/// VNNI, whose byte product (`vpmaddubsw`) adds two products of a stored byte (up to 255) and a
/// query code in 16 signed bits: 2 x 255 x 63 fits, 2 x 255 x 127 does not. The scan's bounds
/// use the query's codes as they are, so a coarser query only widens them.
pub(crate) fn query_code_limit() -> i8 {
    #[cfg(target_arch = "x86_64")]
    if !std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx2")
    {
        return NARROW_LIMIT;
    }
    127
}

/// The largest query code AVX2's byte product takes without saturating (see
/// [`query_code_limit`]).
const NARROW_LIMIT: i8 = 63;

/// An int8 query as [`dot_blocks`] reads it.
#[derive(Debug)]
pub(crate) struct Int8Query {
    /// The codes, padded with zeros to whole groups of four.
    codes: Vec<i8>,
    /// The same codes, four to an `i32`, as `vpdpbusd` and `vpmaddubsw` broadcast them.
    words: Vec<i32>,
    /// Whether every code is within [`NARROW_LIMIT`], as AVX2's kernel needs.
    narrow: bool,
    /// `128 x Σ codes`: what the stored codes' `+ 128` adds to every dot product.
    excess: i32,
}

impl Int8Query {
    pub fn new(mut codes: Vec<i8>) -> Self {
        codes.resize(codes.len().div_ceil(GROUP) * GROUP, 0);
        let words = codes
            .chunks_exact(GROUP)
            .map(|group| i32::from_le_bytes([0, 1, 2, 3].map(|j| group[j] as u8)))
            .collect();
        let narrow = codes.iter().all(|c| c.unsigned_abs() <= NARROW_LIMIT as u8);
        let excess = 128 * codes.iter().map(|&c| i32::from(c)).sum::<i32>();
        Int8Query {
            codes,
            words,
            narrow,
            excess,
        }
    }
}

/// Writes `out[i] = dot(row i, query)` in exact integer arithmetic for every row of whole blocks
/// of int8 codes, with the fastest kernel the CPU supports.
///
/// The layout puts 16 rows side by side: a block holds, for each group of four dimensions, the
/// four codes of row 0, then of row 1, …, of row 15 (64 bytes), each stored as `code + 128`. One
/// `vpdpbusd` then multiplies a group of all 16 rows by the query's four codes (broadcast) and
/// adds into 16 sums, one per row: a block's dot products end in one register, with no
/// horizontal sums, and the scan reads the codes front to back.
pub(crate) fn dot_blocks(blocks: &[u8], query: &Int8Query, out: &mut [i32]) {
    assert!(
        out.len().is_multiple_of(BLOCK_ROWS)
            && blocks.len() == out.len() / BLOCK_ROWS * block_bytes(query.codes.len()),
        "one block of codes per 16 outputs"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni") && !query.words.is_empty() {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX-512 F and VNNI, checked just above.
        unsafe {
            dot_blocks_vnni(blocks, query, out)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && query.narrow {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe {
            dot_blocks_avx2(blocks, query, out)
        };
        return;
    }
    dot_blocks_portable(blocks, query, out);
}

/// Blocks scanned together: four independent sums hide `vpdpbusd`'s latency, and each
/// broadcast of the query serves all four.
#[cfg(target_arch = "x86_64")]
const VNNI_BLOCKS: usize = 4;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn dot_blocks_vnni(blocks: &[u8], query: &Int8Query, out: &mut [i32]) {
    let bytes = query.words.len() * BLOCK_ROWS * GROUP;
    let mut together = blocks.chunks_exact(VNNI_BLOCKS * bytes);
    let mut outs = out.chunks_exact_mut(VNNI_BLOCKS * BLOCK_ROWS);
    for (blocks, out) in (&mut together).zip(&mut outs) {
        dot_vnni::<VNNI_BLOCKS>(blocks, query, out);
    }
    let rest = together.remainder().chunks_exact(bytes);
    for (block, out) in rest.zip(outs.into_remainder().chunks_exact_mut(BLOCK_ROWS)) {
        dot_vnni::<1>(block, query, out);
    }
}

/// [`dot_blocks`] for exactly `N` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn dot_vnni<const N: usize>(blocks: &[u8], query: &Int8Query, out: &mut [i32]) {
    use std::arch::x86_64::{
        _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512,
        _mm512_storeu_si512, _mm512_sub_epi32,
    };
    const LANE_BYTES: usize = BLOCK_ROWS * GROUP;
    let bytes = query.words.len() * LANE_BYTES;
    assert!(blocks.len() == N * bytes && out.len() == N * BLOCK_ROWS);
    let mut sums = [_mm512_setzero_si512(); N];
    for (g, &word) in query.words.iter().enumerate() {
        let word = _mm512_set1_epi32(word);
        for (b, sum) in sums.iter_mut().enumerate() {
            let at = b * bytes + g * LANE_BYTES;
            #[allow(unsafe_code)]
            // SAFETY: `g < words.len()` and `b < N`, so `at + 64 <= N * bytes = blocks.len()`
            // (asserted above): the 64 bytes read are inside `blocks`.
            let codes = unsafe { _mm512_loadu_si512(blocks.as_ptr().add(at).cast()) };
            *sum = _mm512_dpbusd_epi32(*sum, codes, word);
        }
    }
    let excess = _mm512_set1_epi32(query.excess);
    for (sum, out) in sums.into_iter().zip(out.chunks_exact_mut(BLOCK_ROWS)) {
        #[allow(unsafe_code)]
        // SAFETY: `out` is a chunk of exactly 16 i32s, the 64 bytes written.
        unsafe {
            _mm512_storeu_si512(out.as_mut_ptr().cast(), _mm512_sub_epi32(sum, excess))
        };
    }
}

/// [`dot_blocks`] with AVX2, which has no `vpdpbusd`, for a query within [`NARROW_LIMIT`]:
/// `vpmaddubsw` multiplies 8 rows by 4 codes (32 stored bytes) by the query's four codes and
/// adds them in pairs, then `vpmaddwd` by ones adds each row's two pairs into its 32-bit sum:
/// twice the codes an instruction that widening them to 16 bits for `vpmaddwd` alone handles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_blocks_avx2(blocks: &[u8], query: &Int8Query, out: &mut [i32]) {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16,
        _mm256_set1_epi16, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_storeu_si256,
        _mm256_sub_epi32,
    };
    const HALF: usize = BLOCK_ROWS / 2 * GROUP;
    assert!(query.narrow, "AVX2's byte products need a narrow query");
    let bytes = query.words.len() * BLOCK_ROWS * GROUP;
    if bytes == 0 {
        out.fill(0);
        return;
    }
    let ones = _mm256_set1_epi16(1);
    let excess = _mm256_set1_epi32(query.excess);
    for (block, out) in blocks
        .chunks_exact(bytes)
        .zip(out.chunks_exact_mut(BLOCK_ROWS))
    {
        let mut sums = [_mm256_setzero_si256(); 2];
        for (codes, &word) in block.chunks_exact(2 * HALF).zip(&query.words) {
            let word = _mm256_set1_epi32(word);
            for (sum, codes) in sums.iter_mut().zip(codes.chunks_exact(HALF)) {
                #[allow(unsafe_code)]
                // SAFETY: `codes` is a chunk of exactly 32 bytes, the 32 read.
                let codes = unsafe { _mm256_loadu_si256(codes.as_ptr().cast::<__m256i>()) };
                let pairs = _mm256_maddubs_epi16(codes, word);
                *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
            }
        }
        for (sum, out) in sums.into_iter().zip(out.chunks_exact_mut(BLOCK_ROWS / 2)) {
            #[allow(unsafe_code)]
            // SAFETY: `out` is a chunk of exactly 8 i32s, the 32 bytes written.
            unsafe {
                _mm256_storeu_si256(
                    out.as_mut_ptr().cast::<__m256i>(),
                    _mm256_sub_epi32(sum, excess),
                )
            };
        }
    }
}

#[inline(always)]
fn dot_blocks_portable(blocks: &[u8], query: &Int8Query, out: &mut [i32]) {
    let lanes = BLOCK_ROWS * GROUP;
    let bytes = query.words.len() * lanes;
    if bytes == 0 {
        out.fill(0);
        return;
    }
    for (block, out) in blocks
        .chunks_exact(bytes)
        .zip(out.chunks_exact_mut(BLOCK_ROWS))
    {
        let mut sums = [0i32; BLOCK_ROWS];
        for (codes, query) in block
            .chunks_exact(lanes)
            .zip(query.codes.chunks_exact(GROUP))
        {
            for (sum, row) in sums.iter_mut().zip(codes.chunks_exact(GROUP)) {
                for (&x, &q) in row.iter().zip(query) {
                    *sum += i32::from(x) * i32::from(q);
                }
            }
        }
        for (out, sum) in out.iter_mut().zip(sums) {
            *out = sum - query.excess;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Int8Kernel = Box<dyn Fn(&[u8], &Int8Query, &mut [i32])>;

    /// Every int8 kernel this CPU can run, by name, with the largest query code it takes.
    fn int8_kernels() -> Vec<(&'static str, i8, Int8Kernel)> {
        let mut kernels: Vec<(&str, i8, Int8Kernel)> = vec![
            ("detected", 127, Box::new(dot_blocks)),
            ("portable", 127, Box::new(dot_blocks_portable)),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            #[allow(unsafe_code)]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                kernels.push((
                    "avx2",
                    NARROW_LIMIT,
                    Box::new(|blocks, query, out| unsafe { dot_blocks_avx2(blocks, query, out) }),
                ));
            }
            #[allow(unsafe_code)]
            if std::arch::is_x86_feature_detected!("avx512vnni") {
                // SAFETY: the CPU supports AVX-512 F and VNNI, checked just above.
                kernels.push((
                    "avx512-vnni",
                    127,
                    Box::new(|blocks, query, out| unsafe { dot_blocks_vnni(blocks, query, out) }),
                ));
            }
        }
        kernels
    }

    /// Lays out `rows` of `dims` codes as [`dot_blocks`] reads them, padding with zero codes.
    fn layout(codes: &[i8], dims: usize) -> Vec<u8> {
        let rows = codes.len() / dims;
        let mut blocks = vec![stored_code(0); rows.div_ceil(BLOCK_ROWS) * block_bytes(dims)];
        for (r, row) in codes.chunks_exact(dims).enumerate() {
            for (d, &code) in row.iter().enumerate() {
                blocks[code_position(dims, r, d)] = stored_code(code);
            }
        }
        blocks
    }

    #[test]
    fn every_int8_kernel_is_exact() {
        // Widths around whole groups of four, and row counts that leave the four-block scan a
        // remainder and the last block partly empty; queries of 8-bit and of 7-bit codes.
        for dims in [1, 3, 4, 5, 63, 64, 65, 383, 384] {
            for rows in [1, 16, 17, 64, 65, 100] {
                let codes: Vec<i8> = (0..rows * dims)
                    .map(|i| (((i * 7919) % 255) as i32 - 127) as i8)
                    .collect();
                let blocks = layout(&codes, dims);
                for limit in [127, NARROW_LIMIT] {
                    let span = 2 * i32::from(limit) + 1;
                    let query: Vec<i8> = (0..dims)
                        .map(|i| ((i * 104729) as i32 % span - i32::from(limit)) as i8)
                        .collect();
                    let int8_query = Int8Query::new(query.clone());
                    for (name, _, kernel) in int8_kernels()
                        .into_iter()
                        .filter(|(_, takes, _)| *takes >= limit)
                    {
                        let mut out = vec![0; rows.div_ceil(BLOCK_ROWS) * BLOCK_ROWS];
                        kernel(&blocks, &int8_query, &mut out);
                        for r in 0..rows {
                            let naive: i32 = (0..dims)
                                .map(|d| i32::from(codes[r * dims + d]) * i32::from(query[d]))
                                .sum();
                            assert_eq!(
                                out[r], naive,
                                "{name}: dims {dims}, {rows} rows, row {r}, codes to {limit}"
                            );
                        }
                        assert!(out[rows..].iter().all(|&o| o == 0), "{name}: padding rows");
                    }
                }
            }
        }
        // The extreme codes, where stored bytes reach 255 and 1 and the query its limit: the
        // byte products' pairs are at their largest.
        let codes = [127i8, -127, 127, -127, -127, -127, 127, 127];
        let blocks = layout(&codes, 4);
        for (name, limit, kernel) in int8_kernels() {
            let mut out = vec![0; BLOCK_ROWS];
            kernel(
                &blocks,
                &Int8Query::new(vec![limit, -limit, limit, -limit]),
                &mut out,
            );
            let limit = i32::from(limit);
            assert_eq!(out[..2], [4 * 127 * limit, 0], "{name}");
        }
        // A query beyond the AVX2 kernel's limit is still summed exactly by the detected one.
        let mut out = vec![0; BLOCK_ROWS];
        dot_blocks(&blocks, &Int8Query::new(vec![127, -127, 127, 64]), &mut out);
        assert_eq!(out[..2], [127 * 127 * 3 - 127 * 64, 127 * 127 + 127 * 64]);
    }

    #[test]
    fn detected_kernel_matches_the_portable_one_and_a_naive_sum() {
        // 3000 x 384 floats is above the parallel threshold, so the threaded path is compared too.
        for dims in [1, 7, 16, 33, 384] {
            let rows = if dims == 384 { 3000 } else { 50 };
            let matrix: Vec<f32> = (0..rows * dims)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let query: Vec<f32> = (0..dims)
                .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let mut fast = vec![0.0; rows];
            let mut portable = vec![0.0; rows];
            dot_rows(&matrix, &query, &mut fast);
            dot_rows_portable(&matrix, &query, &mut portable);
            for r in 0..rows {
                let naive: f64 = (0..dims)
                    .map(|d| f64::from(matrix[r * dims + d]) * f64::from(query[d]))
                    .sum();
                assert!(
                    (f64::from(fast[r]) - naive).abs() < 1e-4,
                    "dims {dims} row {r}"
                );
                assert!((fast[r] - portable[r]).abs() < 1e-4, "dims {dims} row {r}");
            }
        }
    }
}
