//! The embedder's own int8 weight product, an ONNX Runtime custom operator.
//!
//! `ai.isa.Int8MatMul(x, codes, scales)` computes `x · (codes * scales)` for f32 activations `x`
//! (`[..., K]`), int8 weight codes (`[K, N]`, an initializer) and one f32 scale per output column:
//! the model's weights as stored. Like `MatMulNBits` at `accuracy_level` 4, it rounds each
//! activation row to int8 with one scale per 32 values and multiplies in int8 (AVX-512 VNNI's
//! `vpdpbusd`). What differs is the loop: a tile is up to 12 rows by 16 columns, so the weights
//! of a short query (11 tokens) pass through the core once, one cache line per register load,
//! fetched a few blocks ahead. A short query's products are mostly waiting for weights (about
//! 13 MB for all-MiniLM-L6-v2, which do not stay in cache from one query to the next). On the
//! 2-core development machine (AMD EPYC, Zen 4), on one thread, a short query took 2.3 ms with
//! this kernel against 3.3 ms with `MatMulNBits`, run back to back.
//!
//! The kernel runs only where the CPU has AVX-512 VNNI ([`available`]); elsewhere the rewrite
//! keeps `MatMulNBits`. Weights are repacked once, when ONNX Runtime creates the kernel; tasks of
//! 16 columns each run on ONNX Runtime's intra-op threads.

use ort::{
    operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput},
    value::{TensorElementType, TensorValueType},
};

/// The custom operator domain of the rewritten model.
pub const DOMAIN: &str = "ai.isa";
/// The operator's name within [`DOMAIN`].
pub const OPERATOR: &str = "Int8MatMul";
/// Activation values that share one scale.
pub const BLOCK: usize = 32;
/// Output columns of one tile (and one parallel task): one 512-bit register of sums.
const PANEL: usize = 16;
/// Rows of one tile: each weight register loaded serves this many rows, so the weights of a
/// short query pass through the core once. Twelve rows take 24 of the 32 vector registers.
const TILE_ROWS: usize = 12;
/// How far ahead the kernel asks for weights, in blocks of 32 input rows (512 bytes a panel):
/// the weights of 30 products do not stay in cache between queries, and the hardware's own
/// prefetching left the loop waiting on them.
const PREFETCH_BLOCKS: usize = 4;
/// Input values in one `vpdpbusd` lane.
const QUAD: usize = 4;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether a `[k, n]` weight fits the kernel's tiles.
pub fn fits(k: usize, n: usize) -> bool {
    k > 0 && n > 0 && k.is_multiple_of(BLOCK) && n.is_multiple_of(PANEL)
}

/// A weight repacked for the kernel.
pub struct PackedWeights {
    k: usize,
    n: usize,
    /// From `start` on, for each panel of 16 columns, for each group of 4 input rows, 64 bytes:
    /// the 4 codes of column 0, then of column 1, ... (the operand layout of `vpdpbusd`).
    storage: Vec<i8>,
    /// Where the codes start in `storage`: on a 64-byte boundary, so each register load reads
    /// one cache line, not parts of two.
    start: usize,
    /// For each panel, each block of 32 input rows and each column: `-128 * sum(codes)`, what
    /// the activations' offset of 128 (they enter `vpdpbusd` unsigned) adds to a block's sum.
    offsets: Vec<i32>,
    scales: Vec<f32>,
}

impl PackedWeights {
    /// Repacks row-major `[k, n]` codes with one scale per column.
    pub fn new(codes: &[i8], k: usize, n: usize, scales: &[f32]) -> Result<Self, String> {
        if !fits(k, n) || k.checked_mul(n) != Some(codes.len()) || scales.len() != n {
            return Err(format!(
                "an int8 weight of {} codes and {} scales is not [{k}, {n}] with K a multiple \
                 of {BLOCK} and N of {PANEL}",
                codes.len(),
                scales.len()
            ));
        }
        let panels = n / PANEL;
        let blocks = k / BLOCK;
        let mut storage = vec![0i8; k * n + 63];
        let start = storage.as_ptr().align_offset(64);
        let packed = &mut storage[start..start + k * n];
        let mut at = 0;
        let mut offsets = Vec::with_capacity(panels * blocks * PANEL);
        for panel in 0..panels {
            let columns = panel * PANEL..(panel + 1) * PANEL;
            for group in (0..k).step_by(QUAD) {
                for column in columns.clone() {
                    for row in group..group + QUAD {
                        packed[at] = codes[row * n + column];
                        at += 1;
                    }
                }
            }
            for block in (0..k).step_by(BLOCK) {
                offsets.extend(columns.clone().map(|column| {
                    let sum: i32 = (block..block + BLOCK)
                        .map(|row| i32::from(codes[row * n + column]))
                        .sum();
                    -128 * sum
                }));
            }
        }
        Ok(PackedWeights {
            k,
            n,
            storage,
            start,
            offsets,
            scales: scales.to_vec(),
        })
    }

    fn codes(&self) -> &[i8] {
        &self.storage[self.start..][..self.k * self.n]
    }

    /// `output = input · weight` for `input` of whole rows of K values; `output` holds N values
    /// per row. `parallel_for(tasks, task)` runs `task(0..tasks)`, each exactly once, possibly
    /// on several threads at once: a task writes only its own 16 columns.
    pub fn multiply(
        &self,
        input: &[f32],
        output: &mut [f32],
        parallel_for: impl FnOnce(usize, &(dyn Fn(usize) + Sync)),
    ) {
        let rows = input.len() / self.k;
        assert!(
            input.len() == rows * self.k && output.len() == rows * self.n,
            "an int8 product of {} inputs into {} outputs is not whole rows of [{}, {}]",
            input.len(),
            output.len(),
            self.k,
            self.n
        );
        let activations = Activations::quantize(input, self.k);
        let output = Output(output.as_mut_ptr());
        let task = |panel: usize| {
            for row in (0..rows).step_by(TILE_ROWS) {
                let tile_rows = (rows - row).min(TILE_ROWS);
                let mut sums = [0f32; TILE_ROWS * PANEL];
                self.tile(&activations, row, tile_rows, panel, &mut sums);
                for (r, sums) in sums.chunks_exact(PANEL).take(tile_rows).enumerate() {
                    let at = (row + r) * self.n + panel * PANEL;
                    #[allow(unsafe_code)]
                    // SAFETY: `row + r < rows` and `(panel + 1) * 16 <= n`, so the 16 values
                    // written are inside `output` (`rows * n` long, asserted above); tasks write
                    // disjoint columns, and `output` outlives `parallel_for`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(sums.as_ptr(), output.at(at), PANEL)
                    };
                }
            }
        };
        parallel_for(self.n / PANEL, &task);
    }

    /// Sums for `tile_rows` rows from `row` and the 16 columns of `panel`, into `sums` (16 per
    /// row).
    fn tile(
        &self,
        activations: &Activations,
        row: usize,
        tile_rows: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * PANEL],
    ) {
        #[cfg(target_arch = "x86_64")]
        if available() {
            macro_rules! tile_of {
                ($($rows:literal)*) => {
                    match tile_rows {
                        $($rows => self.tile_vnni::<$rows>(activations, row, panel, sums),)*
                        _ => unreachable!("1 to {TILE_ROWS} rows"),
                    }
                };
            }
            #[allow(unsafe_code)]
            // SAFETY: the CPU supports AVX-512 F and VNNI, checked just above.
            unsafe {
                tile_of!(1 2 3 4 5 6 7 8 9 10 11 12)
            };
            return;
        }
        self.tile_portable(activations, row, tile_rows, panel, sums);
    }

    /// The same sums one multiply-add at a time: for CPUs without VNNI (where the rewrite does
    /// not use this operator) and as the tests' reference.
    fn tile_portable(
        &self,
        activations: &Activations,
        row: usize,
        tile_rows: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * PANEL],
    ) {
        let blocks = self.k / BLOCK;
        let weights = &self.codes()[panel * self.k * PANEL..][..self.k * PANEL];
        for r in 0..tile_rows {
            let codes = &activations.codes[(row + r) * self.k..][..self.k];
            let scales = &activations.scales[(row + r) * blocks..][..blocks];
            for lane in 0..PANEL {
                let mut sum = 0f32;
                for (block, scale) in scales.iter().enumerate() {
                    let mut block_sum = self.offsets[(panel * blocks + block) * PANEL + lane];
                    for i in block * BLOCK..(block + 1) * BLOCK {
                        let weight = weights[(i / QUAD) * QUAD * PANEL + lane * QUAD + i % QUAD];
                        block_sum += i32::from(codes[i]) * i32::from(weight);
                    }
                    sum = (block_sum as f32).mul_add(*scale, sum);
                }
                sums[r * PANEL + lane] = sum * self.scales[panel * PANEL + lane];
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn tile_vnni<const R: usize>(
        &self,
        activations: &Activations,
        row: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * PANEL],
    ) {
        use std::arch::x86_64::{
            __m512i, _MM_HINT_T0, _mm_prefetch, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32,
            _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32,
            _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
        };
        const LINE: usize = 64;
        let (k, blocks) = (self.k, self.k / BLOCK);
        // The slices each register load reads, bounds-checked once here.
        let all = self.codes();
        let weights = &all[panel * k * PANEL..][..k * PANEL];
        let offsets = &self.offsets[panel * blocks * PANEL..][..blocks * PANEL];
        let codes: [&[u8]; R] = std::array::from_fn(|r| &activations.codes[(row + r) * k..][..k]);
        let scales: [&[f32]; R] =
            std::array::from_fn(|r| &activations.scales[(row + r) * blocks..][..blocks]);

        let mut totals = [_mm512_setzero_ps(); R];
        for block in 0..blocks {
            // Weights a few blocks on, up to the end of all the panels (the next task's panel
            // follows this one).
            let ahead = (panel * k * PANEL + (block + PREFETCH_BLOCKS) * BLOCK * PANEL)
                .min(all.len() - BLOCK * PANEL);
            for line in (ahead..ahead + BLOCK * PANEL).step_by(LINE) {
                _mm_prefetch::<_MM_HINT_T0>(all[line..].as_ptr());
            }
            assert!((block + 1) * PANEL <= offsets.len());
            #[allow(unsafe_code)]
            // SAFETY: the 16 offsets read are inside `offsets`, asserted just above.
            let start = unsafe { _mm512_loadu_si512(offsets.as_ptr().add(block * PANEL).cast()) };
            let mut block_sums = [start; R];
            for group in block * BLOCK / QUAD..(block + 1) * BLOCK / QUAD {
                let at = group * QUAD * PANEL;
                assert!(at + LINE <= weights.len());
                #[allow(unsafe_code)]
                // SAFETY: the 64 bytes read are inside `weights`, asserted just above.
                let w: __m512i = unsafe { _mm512_loadu_si512(weights.as_ptr().add(at).cast()) };
                for (sum, codes) in block_sums.iter_mut().zip(&codes) {
                    let word = &codes[group * QUAD..][..QUAD];
                    let a =
                        _mm512_set1_epi32(i32::from_le_bytes([word[0], word[1], word[2], word[3]]));
                    *sum = _mm512_dpbusd_epi32(*sum, a, w);
                }
            }
            for ((total, block_sum), scales) in totals.iter_mut().zip(block_sums).zip(&scales) {
                let scale = _mm512_set1_ps(scales[block]);
                *total = _mm512_fmadd_ps(_mm512_cvtepi32_ps(block_sum), scale, *total);
            }
        }
        let column_scales = &self.scales[panel * PANEL..][..PANEL];
        #[allow(unsafe_code)]
        // SAFETY: `column_scales` is exactly 16 floats, the 64 bytes read.
        let column_scales = unsafe { _mm512_loadu_ps(column_scales.as_ptr()) };
        for (total, out) in totals.iter().zip(sums.chunks_exact_mut(PANEL)) {
            #[allow(unsafe_code)]
            // SAFETY: `out` is exactly 16 floats, the 64 bytes written.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), _mm512_mul_ps(*total, column_scales))
            };
        }
    }
}

/// Activation rows rounded to int8, one scale per [`BLOCK`] values, stored offset by 128 (the
/// unsigned operand of `vpdpbusd`).
struct Activations {
    codes: Vec<u8>,
    scales: Vec<f32>,
}

impl Activations {
    fn quantize(input: &[f32], k: usize) -> Self {
        assert!(k.is_multiple_of(BLOCK) && input.len().is_multiple_of(k));
        let mut activations = Activations {
            codes: vec![0u8; input.len()],
            scales: vec![0f32; input.len() / BLOCK],
        };
        #[cfg(target_arch = "x86_64")]
        if available() {
            #[allow(unsafe_code)]
            // SAFETY: the CPU supports AVX-512 F, checked just above.
            unsafe {
                activations.round_avx512(input)
            };
            return activations;
        }
        activations.round_portable(input);
        activations
    }

    /// One block's scale (its largest magnitude over 127) and the factor that maps it onto
    /// [-127, 127].
    fn scale(largest: f32) -> (f32, f32) {
        let inverse = if largest > 0.0 { 127.0 / largest } else { 0.0 };
        (largest / 127.0, inverse)
    }

    fn round_portable(&mut self, input: &[f32]) {
        let blocks = input
            .chunks_exact(BLOCK)
            .zip(self.codes.chunks_exact_mut(BLOCK));
        for ((values, codes), scale) in blocks.zip(&mut self.scales) {
            let largest = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inverse;
            (*scale, inverse) = Self::scale(largest);
            for (code, value) in codes.iter_mut().zip(values) {
                // Within [-127, 127] by the choice of scale, so within [1, 255] once offset.
                *code = ((value * inverse).round_ties_even() as i32 + 128) as u8;
            }
        }
    }

    /// [`Activations::round_portable`] 16 values at a time (rounding to nearest even, as
    /// `vcvtps2dq` does by default); the scalar loop was a third of a short query's products.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn round_avx512(&mut self, input: &[f32]) {
        use std::arch::x86_64::{
            _mm_storeu_si128, _mm512_abs_ps, _mm512_add_epi32, _mm512_cvtepi32_epi8,
            _mm512_cvtps_epi32, _mm512_loadu_ps, _mm512_max_ps, _mm512_mul_ps,
            _mm512_reduce_max_ps, _mm512_set1_epi32, _mm512_set1_ps,
        };
        let blocks = input
            .chunks_exact(BLOCK)
            .zip(self.codes.chunks_exact_mut(BLOCK));
        for ((values, codes), scale) in blocks.zip(&mut self.scales) {
            let [low, high] = [0, 16].map(|at| {
                let half = &values[at..at + 16];
                #[allow(unsafe_code)]
                // SAFETY: `half` is exactly 16 floats, the 64 bytes read.
                unsafe {
                    _mm512_loadu_ps(half.as_ptr())
                }
            });
            let largest =
                _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high)));
            let inverse;
            (*scale, inverse) = Self::scale(largest);
            let inverse = _mm512_set1_ps(inverse);
            let offset = _mm512_set1_epi32(128);
            for (half, codes) in [low, high].into_iter().zip(codes.chunks_exact_mut(16)) {
                let rounded = _mm512_cvtps_epi32(_mm512_mul_ps(half, inverse));
                let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(rounded, offset));
                #[allow(unsafe_code)]
                // SAFETY: `codes` is exactly 16 bytes, the 16 written.
                unsafe {
                    _mm_storeu_si128(codes.as_mut_ptr().cast(), bytes)
                };
            }
        }
    }
}

/// The output buffer, shared by tasks that write disjoint columns of it.
struct Output(*mut f32);

impl Output {
    /// A pointer `offset` values in, for the caller to keep inside the buffer. A method, so
    /// closures capture the whole `Output` (which is `Sync`), not its raw pointer.
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

#[allow(unsafe_code)]
// SAFETY: tasks write disjoint parts of the buffer (see `PackedWeights::multiply`).
unsafe impl Sync for Output {}

/// The ONNX Runtime operator over [`PackedWeights`].
pub struct Int8MatMul;

impl Operator for Int8MatMul {
    type Kernel<'attr> = PackedWeights;

    fn name(&self) -> &str {
        OPERATOR
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Int8),
            OperatorInput::required(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, context: &KernelContext<'attr>) -> ort::Result<PackedWeights> {
        let codes = context.constant_input::<TensorValueType<i8>>(1)?;
        let scales = context.constant_input::<TensorValueType<f32>>(2)?;
        let (shape, codes) = codes.try_extract_tensor::<i8>()?;
        let (_, scales) = scales.try_extract_tensor::<f32>()?;
        let [k, n] = shape[..] else {
            return Err(ort::Error::new(format!(
                "{OPERATOR} takes [K, N] weight codes, not {shape:?}"
            )));
        };
        PackedWeights::new(codes, k as usize, n as usize, scales).map_err(ort::Error::new)
    }
}

impl Kernel for PackedWeights {
    fn compute(&mut self, context: &ComputeContext) -> ort::Result<()> {
        let missing = || ort::Error::new(format!("{OPERATOR} is missing its input or output"));
        let input = context.input(0)?.ok_or_else(missing)?;
        let (shape, input) = input.try_extract_tensor::<f32>()?;
        if shape.last() != Some(&(self.k as i64)) {
            return Err(ort::Error::new(format!(
                "{OPERATOR} over [{}, {}] weights got input of shape {shape:?}",
                self.k, self.n
            )));
        }
        // The input's shape with its last dimension (K, checked above) replaced by N.
        let mut output_shape = shape[..shape.len() - 1].to_vec();
        output_shape.push(self.n as i64);
        let mut output = context.output(0, output_shape)?.ok_or_else(missing)?;
        let (_, output) = output.try_extract_tensor_mut::<f32>()?;
        let mut result = Ok(());
        self.multiply(input, output, |tasks, task| {
            result = context.par_for(tasks, 0, task);
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random sequence (64-bit LCG).
    fn sequence(seed: u64) -> impl FnMut() -> u32 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        }
    }

    fn weights(k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
        let mut next = sequence(7);
        let codes = (0..k * n)
            .map(|_| (next() % 255) as i32 - 127)
            .collect::<Vec<_>>();
        let codes = codes.into_iter().map(|c| c as i8).collect();
        let scales = (0..n)
            .map(|_| 1e-3 + (next() % 100) as f32 * 1e-5)
            .collect();
        (codes, scales)
    }

    fn sequential(tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..tasks).for_each(task)
    }

    /// `input · (codes * scales)` in f64, without rounding the activations.
    fn exact_product(input: &[f32], codes: &[i8], scales: &[f32], k: usize) -> Vec<f64> {
        let n = scales.len();
        input
            .chunks_exact(k)
            .flat_map(|row| {
                (0..n).map(move |c| {
                    let dot: f64 = (0..k)
                        .map(|i| f64::from(row[i]) * f64::from(codes[i * n + c]))
                        .sum();
                    dot * f64::from(scales[c])
                })
            })
            .collect()
    }

    #[test]
    fn the_product_is_the_weights_product_within_the_rounding_of_the_activations() {
        let (k, n) = (96, 64);
        let (codes, scales) = weights(k, n);
        let packed = PackedWeights::new(&codes, k, n, &scales).expect("fits");
        let mut next = sequence(11);
        // One tile of 1 to 12 rows, several tiles, and a row of zeros among them.
        for rows in (1..=14).chain([25]) {
            let mut input: Vec<f32> = (0..rows * k)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            if rows == 5 {
                input[2 * k..3 * k].fill(0.0);
            }
            let mut output = vec![f32::NAN; rows * n];
            packed.multiply(&input, &mut output, sequential);
            let exact = exact_product(&input, &codes, &scales, k);
            for (got, want) in output.iter().zip(&exact) {
                // Each activation is off by at most half a step (|x| <= 1, so 0.5/127), each
                // weight at most 127 * 1.99e-3: K of them bound the error.
                let bound = k as f64 * (0.5 / 127.0) * 127.0 * 1.99e-3;
                assert!(
                    (f64::from(*got) - want).abs() <= bound,
                    "{rows} rows: {got} against {want}"
                );
            }
            if rows == 5 {
                assert!(output[2 * n..3 * n].iter().all(|&v| v == 0.0));
            }
        }
    }

    #[test]
    fn the_vnni_tiles_add_up_what_the_portable_loop_does() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let (k, n) = (384, 96);
        let (codes, scales) = weights(k, n);
        let packed = PackedWeights::new(&codes, k, n, &scales).expect("fits");
        let mut next = sequence(3);
        let input: Vec<f32> = (0..14 * k)
            .map(|_| (next() % 4001) as f32 / 100.0 - 20.0)
            .collect();
        let activations = Activations::quantize(&input, k);
        let mut portable = Activations {
            codes: vec![0; input.len()],
            scales: vec![0.0; input.len() / BLOCK],
        };
        portable.round_portable(&input);
        assert_eq!(activations.codes, portable.codes, "rounded alike");
        assert_eq!(activations.scales, portable.scales);
        for panel in 0..n / PANEL {
            for (row, rows) in [(0, 12), (2, 11), (13, 1), (5, 7)] {
                let mut vnni = [0f32; TILE_ROWS * PANEL];
                let mut portable = [0f32; TILE_ROWS * PANEL];
                packed.tile(&activations, row, rows, panel, &mut vnni);
                packed.tile_portable(&activations, row, rows, panel, &mut portable);
                // The same integer sums, scaled and added by the same fused multiply-adds.
                assert_eq!(vnni, portable, "panel {panel}, rows {row}..{}", row + rows);
            }
        }
    }

    #[test]
    fn tasks_on_several_threads_write_the_columns_one_thread_writes() {
        let (k, n) = (64, 128);
        let (codes, scales) = weights(k, n);
        let packed = PackedWeights::new(&codes, k, n, &scales).expect("fits");
        let input: Vec<f32> = (0..6 * k).map(|i| (i % 17) as f32 - 8.0).collect();
        let mut alone = vec![0f32; 6 * n];
        packed.multiply(&input, &mut alone, sequential);
        let mut together = vec![0f32; 6 * n];
        packed.multiply(&input, &mut together, |tasks, task| {
            std::thread::scope(|scope| {
                for t in 0..tasks {
                    scope.spawn(move || task(t));
                }
            })
        });
        assert_eq!(alone, together);
    }

    #[test]
    fn weights_that_do_not_fill_whole_tiles_are_refused() {
        let (codes, scales) = weights(40, 32);
        let error = PackedWeights::new(&codes, 40, 32, &scales)
            .err()
            .expect("K not 32s");
        assert!(error.contains("K a multiple of 32"), "{error}");
        let (codes, scales) = weights(32, 40);
        assert!(PackedWeights::new(&codes, 32, 40, &scales).is_err());
        let (codes, scales) = weights(32, 32);
        assert!(PackedWeights::new(&codes, 32, 32, &scales[..31]).is_err());
        assert!(PackedWeights::new(&codes[..100], 32, 32, &scales).is_err());
        assert!(PackedWeights::new(&[], 0, 0, &[]).is_err());
        // A shape whose size overflows (a corrupt model's dimensions) is refused, not a panic.
        assert!(PackedWeights::new(&codes, 1 << 60, 32, &scales).is_err());
    }
}
