//! Dot products of a query against a row-major matrix: the inner loop of dense selection.
//!
//! Floats: the same safe Rust loop is compiled twice, for the baseline x86-64 (SSE2) and with
//! AVX2 and FMA enabled (8-wide instead of 4-wide vectors), chosen at run time when the CPU has
//! them, so one binary runs everywhere and uses what the EC2 host offers. Int8 codes: AVX-512
//! VNNI where the CPU has it (written with intrinsics; the auto-vectorised loop does not use
//! `vpdpbusd`), else the portable loop compiled for AVX2. The `unsafe` here is calling
//! `#[target_feature]` functions once the features are detected, and the VNNI kernel's masked
//! loads, each with its reason. Tests compare every kernel the CPU runs with a naive sum.

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

/// An int8 query as the int8 kernels read it.
#[derive(Debug)]
pub(crate) struct Int8Query {
    codes: Vec<i8>,
    /// The bytes of `code + 128` as u8 (the sign bit flipped), for the VNNI kernel.
    shifted: Vec<i8>,
}

impl Int8Query {
    pub fn new(codes: Vec<i8>) -> Self {
        let shifted = codes.iter().map(|&q| ((q as u8) ^ 0x80) as i8).collect();
        Int8Query { codes, shifted }
    }
}

/// Writes `out[i] = dot(codes[i], query)` in exact integer arithmetic for every row of an int8
/// matrix, with the fastest kernel the CPU supports. `row_sums[i]` is the sum of row `i`'s codes,
/// which the AVX-512 VNNI kernel needs (see [`dot_rows_i8_vnni`]).
pub(crate) fn dot_rows_i8(codes: &[i8], query: &Int8Query, row_sums: &[i32], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && !query.codes.is_empty()
    {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX-512 F, BW and VNNI, checked just above.
        unsafe {
            dot_rows_i8_vnni(codes, &query.shifted, row_sums, out)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe {
            dot_rows_i8_avx2(codes, &query.codes, out)
        };
        return;
    }
    dot_rows_i8_portable(codes, &query.codes, out);
}

/// Bytes per AVX-512 register.
#[cfg(target_arch = "x86_64")]
const VNNI_BLOCK: usize = 64;

/// `vpdpbusd` multiplies 64 unsigned bytes by 64 signed bytes and adds them into 16 i32 lanes in
/// one instruction, several times the work per instruction of the AVX2 loop, so the scan runs
/// as fast as the cache delivers the codes. Its first operand is unsigned, so the query comes
/// shifted by 128: `Σ (q + 128) x = Σ q x + 128 Σ x`, and the row's code sum takes the excess off.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_rows_i8_vnni(codes: &[i8], shifted_query: &[i8], row_sums: &[i32], out: &mut [i32]) {
    use std::arch::x86_64::{
        __m512i, _mm512_dpbusd_epi32, _mm512_maskz_loadu_epi8, _mm512_reduce_add_epi32,
        _mm512_setzero_si512,
    };
    /// Rows scored together: four independent accumulators hide the instruction's latency.
    const ROWS: usize = 4;
    let dims = shifted_query.len();
    let blocks = dims.div_ceil(VNNI_BLOCK);
    // The last block of a row may be partial: lanes past its end are masked off, read as zero
    // and add nothing.
    let tail = dims - (blocks - 1) * VNNI_BLOCK;
    let tail_mask = if tail == VNNI_BLOCK {
        u64::MAX
    } else {
        (1u64 << tail) - 1
    };
    let load = |row: &[i8], block: usize| -> __m512i {
        let mask = if block + 1 < blocks {
            u64::MAX
        } else {
            tail_mask
        };
        #[allow(unsafe_code)]
        // SAFETY: `row` has `dims` bytes and `block < ceil(dims / 64)`; the mask selects only
        // bytes `block * 64 .. min(dims, block * 64 + 64)`, all inside the row, and AVX-512
        // does not touch masked-off lanes.
        unsafe {
            _mm512_maskz_loadu_epi8(mask, row.as_ptr().add(block * VNNI_BLOCK))
        }
    };
    let query: Vec<__m512i> = (0..blocks).map(|b| load(shifted_query, b)).collect();
    let groups = codes.chunks_exact(ROWS * dims);
    let rest = groups.remainder();
    let mut scored = 0;
    for group in groups {
        let mut acc = [_mm512_setzero_si512(); ROWS];
        for (b, &q) in query.iter().enumerate() {
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_dpbusd_epi32(*acc, q, load(&group[r * dims..(r + 1) * dims], b));
            }
        }
        for acc in acc {
            out[scored] = _mm512_reduce_add_epi32(acc) - 128 * row_sums[scored];
            scored += 1;
        }
    }
    for row in rest.chunks_exact(dims) {
        let mut acc = _mm512_setzero_si512();
        for (b, &q) in query.iter().enumerate() {
            acc = _mm512_dpbusd_epi32(acc, q, load(row, b));
        }
        out[scored] = _mm512_reduce_add_epi32(acc) - 128 * row_sums[scored];
        scored += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_rows_i8_avx2(codes: &[i8], query: &[i8], out: &mut [i32]) {
    dot_rows_i8_portable(codes, query, out)
}

#[inline(always)]
fn dot_rows_i8_portable(codes: &[i8], query: &[i8], out: &mut [i32]) {
    let dims = query.len();
    if dims == 0 {
        out.fill(0);
        return;
    }
    for (row, score) in codes.chunks_exact(dims).zip(out.iter_mut()) {
        let mut acc = [0i32; 2 * LANES];
        let rows = row.chunks_exact(2 * LANES);
        let queries = query.chunks_exact(2 * LANES);
        let tail: i32 = rows
            .remainder()
            .iter()
            .zip(queries.remainder())
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        for (x, y) in rows.zip(queries) {
            for i in 0..2 * LANES {
                acc[i] += i32::from(x[i]) * i32::from(y[i]);
            }
        }
        *score = acc.iter().sum::<i32>() + tail;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Int8Kernel = Box<dyn Fn(&[i8], &Int8Query, &[i32], &mut [i32])>;

    /// Every int8 kernel this CPU can run, by name.
    fn int8_kernels() -> Vec<(&'static str, Int8Kernel)> {
        let mut kernels: Vec<(&str, Int8Kernel)> = vec![
            ("detected", Box::new(dot_rows_i8)),
            (
                "portable",
                Box::new(|codes, query, _, out| dot_rows_i8_portable(codes, &query.codes, out)),
            ),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            #[allow(unsafe_code)]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                kernels.push((
                    "avx2",
                    Box::new(|codes, query, _, out| unsafe {
                        dot_rows_i8_avx2(codes, &query.codes, out)
                    }),
                ));
            }
            #[allow(unsafe_code)]
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                // SAFETY: the CPU supports AVX-512 F, BW and VNNI, checked just above.
                kernels.push((
                    "avx512-vnni",
                    Box::new(|codes, query, sums, out| unsafe {
                        dot_rows_i8_vnni(codes, &query.shifted, sums, out)
                    }),
                ));
            }
        }
        kernels
    }

    #[test]
    fn every_int8_kernel_is_exact() {
        // Widths around the 32- and 64-byte blocks, so partial blocks are covered.
        for dims in [1, 31, 32, 33, 63, 64, 65, 127, 128, 383, 384] {
            let rows = 20;
            let codes: Vec<i8> = (0..rows * dims)
                .map(|i| ((i * 7919) % 255) as i32 - 127)
                .map(|v| v as i8)
                .collect();
            let query: Vec<i8> = (0..dims)
                .map(|i| (((i * 104729) % 255) as i32 - 127) as i8)
                .collect();
            let sums: Vec<i32> = codes
                .chunks_exact(dims)
                .map(|row| row.iter().map(|&c| i32::from(c)).sum())
                .collect();
            let query = Int8Query::new(query);
            for (name, kernel) in int8_kernels() {
                let mut out = vec![0; rows];
                kernel(&codes, &query, &sums, &mut out);
                for r in 0..rows {
                    let naive: i32 = (0..dims)
                        .map(|d| i32::from(codes[r * dims + d]) * i32::from(query.codes[d]))
                        .sum();
                    assert_eq!(out[r], naive, "{name}: dims {dims} row {r}");
                }
            }
        }
        // The extreme codes, where the shifted query reaches 255 and 1.
        let codes = vec![127i8, -127, 127, -127];
        let sums = vec![0, 0];
        for (name, kernel) in int8_kernels() {
            let mut out = vec![0; 2];
            kernel(&codes, &Int8Query::new(vec![127, -127]), &sums, &mut out);
            assert_eq!(out, vec![2 * 127 * 127, 2 * 127 * 127], "{name}");
        }
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
