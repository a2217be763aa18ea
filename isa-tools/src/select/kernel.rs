//! Dot products of a query against a row-major matrix: the inner loop of dense selection.
//!
//! The same safe Rust loop is compiled twice: once for the baseline x86-64 (SSE2) and once with
//! AVX2 and FMA enabled, chosen at run time when the CPU has them. Measured on the 2-core EPYC
//! development machine, the AVX2 build scores 10k x 384 about twice as fast (see `benches/`).
//! This is the workspace's only `unsafe`: calling a `#[target_feature]` function, which is
//! sound once the features are detected.

/// Lanes accumulated in parallel; 16 floats fill two AVX registers.
const LANES: usize = 16;

/// Writes `out[i] = dot(matrix[i], query)` for every row.
pub(crate) fn dot_rows(matrix: &[f32], query: &[f32], out: &mut [f32]) {
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

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detected_kernel_matches_the_portable_one_and_a_naive_sum() {
        for dims in [1, 7, 16, 33, 384] {
            let rows = 50;
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
