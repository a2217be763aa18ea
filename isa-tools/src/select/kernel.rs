//! Dot products of a query against a row-major matrix: the inner loop of dense selection.
//!
//! The same safe Rust loop is compiled twice: once for the baseline x86-64 (SSE2) and once with
//! AVX2 and FMA enabled (8-wide instead of 4-wide vectors), chosen at run time when the CPU has
//! them, so one binary runs everywhere and uses what the EC2 host offers. This is the workspace's
//! only `unsafe`: calling a `#[target_feature]` function, which is sound once the features are
//! detected. A test compares both builds with a naive sum.

/// Lanes accumulated in parallel; 16 floats fill two AVX registers.
const LANES: usize = 16;

/// Matrices at least this many floats are scanned by several threads at once: one core cannot
/// stream 10k x 384 floats from memory as fast as two.
const PARALLEL_MIN_FLOATS: usize = 1 << 20;

/// Writes `out[i] = dot(matrix[i], query)` for every row, splitting large matrices across the
/// available cores.
pub(crate) fn dot_rows(matrix: &[f32], query: &[f32], out: &mut [f32]) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || matrix.len() < PARALLEL_MIN_FLOATS || query.is_empty() {
        return dot_rows_one_thread(matrix, query, out);
    }
    let rows_per_thread = out.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (rows, out) in matrix
            .chunks(rows_per_thread * query.len())
            .zip(out.chunks_mut(rows_per_thread))
        {
            scope.spawn(move || dot_rows_one_thread(rows, query, out));
        }
    });
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

/// Writes `out[i] = dot(codes[i], query)` in exact integer arithmetic for every row of an int8
/// matrix, with the fastest kernel the CPU supports (AVX2 multiplies 16 pairs per instruction).
pub(crate) fn dot_rows_i8(codes: &[i8], query: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe {
            dot_rows_i8_avx2(codes, query, out)
        };
        return;
    }
    dot_rows_i8_portable(codes, query, out);
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

    #[test]
    fn the_int8_kernel_is_exact() {
        for dims in [1, 31, 32, 33, 384] {
            let rows = 20;
            let codes: Vec<i8> = (0..rows * dims)
                .map(|i| ((i * 7919) % 255) as i32 - 127)
                .map(|v| v as i8)
                .collect();
            let query: Vec<i8> = (0..dims)
                .map(|i| (((i * 104729) % 255) as i32 - 127) as i8)
                .collect();
            let mut out = vec![0; rows];
            dot_rows_i8(&codes, &query, &mut out);
            for r in 0..rows {
                let naive: i32 = (0..dims)
                    .map(|d| i32::from(codes[r * dims + d]) * i32::from(query[d]))
                    .sum();
                assert_eq!(out[r], naive, "dims {dims} row {r}");
            }
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
