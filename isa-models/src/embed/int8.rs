//! The embedder's own int8 weight product, an ONNX Runtime custom operator.
//!
//! `ai.isa.Int8MatMul(x, codes, scales, bias?, residual?)` computes
//! `x · (codes * scales) + bias + residual` for f32 activations `x` (`[..., K]`), int8 weight
//! codes (`[K, N]`, an initializer), one f32 scale per output column (the model's weights as
//! stored), and optionally a bias of N values and a residual of the output's shape, added as each
//! tile is written (in that order, as the `Add`s the rewrite folds in did). Like `MatMulNBits` at
//! `accuracy_level` 4, it rounds each activation row to int8 with one scale per 32 values and
//! sums the integer products exactly.
//! What differs is the loop: a tile is up to 12 rows by one register of columns, so the weights
//! of a short query (11 tokens) pass through the core once, one load per register, fetched a few
//! blocks ahead. A short query's products are mostly waiting for weights (about 13 MB for
//! all-MiniLM-L6-v2, which do not stay in cache from one query to the next). Measured figures
//! against `MatMulNBits`, f32 and Python, per CPU, are in `benches/README.md`.
//!
//! Two instruction sets, chosen once per process ([`Isa::detect`]):
//! - AVX-512 VNNI: 16 columns a tile, `vpdpbusd` multiplies four input values (offset by 128 to
//!   be unsigned) by four codes of each column and adds them up in one instruction.
//! - AVX2: 8 columns a tile, the codes widened to 16 bits as they are loaded, `vpmaddwd`
//!   multiplies two input values by two codes of each column. AVX2's 8-bit product
//!   (`vpmaddubsw`) saturates at 16 bits, which int8 activations times int8 codes can exceed;
//!   16-bit products cannot. That is as many multiply-adds an instruction as f32's FMA, so on
//!   AVX2 the gain is in the bytes read: a short query gains, a batch of long texts runs about
//!   as fast as in f32.
//!
//! Elsewhere the rewrite keeps `MatMulNBits`. Weights are repacked once, when ONNX Runtime
//! creates the kernel; tasks of one tile's columns each run on ONNX Runtime's intra-op threads.

use ort::{
    operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorInput, OperatorOutput},
    value::{TensorElementType, TensorValueType, ValueRef},
};

/// The custom operator domain of the rewritten model.
pub const DOMAIN: &str = "ai.isa";
/// The operator's name within [`DOMAIN`].
pub const OPERATOR: &str = "Int8MatMul";
/// Activation values that share one scale.
pub const BLOCK: usize = 32;
/// The widest tile's columns: one 512-bit register of sums. Weights fit the kernel when N is a
/// multiple of this, for every instruction set.
const WIDEST_PANEL: usize = 16;
/// Rows of one tile: each weight register loaded serves this many rows, so the weights of a
/// short query pass through the core once. Twelve rows take 24 of AVX-512's 32 vector registers
/// and 12 of AVX2's 16.
const TILE_ROWS: usize = 12;
/// How far ahead the kernel asks for weights, in bytes: the weights of 30 products do not stay
/// in cache between queries, and the hardware's own prefetching left the loop waiting on them.
const PREFETCH_BYTES: usize = 2048;
const LINE: usize = 64;
/// Tasks a product is split into at least, where its size allows, so that ONNX Runtime's
/// threads share the work evenly.
const TASKS: usize = 64;

/// The vector instructions the kernel runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 F and VNNI: `vpdpbusd` over tiles of 16 columns.
    Avx512Vnni,
    /// AVX2 and FMA: `vpmaddwd` over tiles of 8 columns.
    Avx2,
}

impl Isa {
    /// The best instruction set of this CPU, if it has one the kernel uses.
    pub fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512vnni") {
                return Some(Isa::Avx512Vnni);
            }
            if has!("avx2") && has!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }

    /// Whether this CPU has these instructions.
    fn runs_here(self) -> bool {
        match Isa::detect() {
            Some(Isa::Avx512Vnni) => true,
            Some(Isa::Avx2) => self == Isa::Avx2,
            None => false,
        }
    }

    /// How the weights are laid out for it.
    fn layout(self) -> Layout {
        match self {
            Isa::Avx512Vnni => Layout {
                panel: 16,
                group: 4,
            },
            Isa::Avx2 => Layout { panel: 8, group: 2 },
        }
    }
}

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    Isa::detect().is_some()
}

/// Whether a `[k, n]` weight fits the kernel's tiles.
pub fn fits(k: usize, n: usize) -> bool {
    k > 0 && n > 0 && k.is_multiple_of(BLOCK) && n.is_multiple_of(WIDEST_PANEL)
}

/// The order of packed codes: for each panel of `panel` columns, for each group of `group`
/// input rows, the group's codes of column 0, then of column 1, ... (the operand layout of
/// `vpdpbusd` for 4 rows by 16 columns, of `vpmaddwd` for 2 by 8).
#[derive(Debug, Clone, Copy)]
struct Layout {
    panel: usize,
    group: usize,
}

/// A weight repacked for the kernel.
pub struct PackedWeights {
    k: usize,
    n: usize,
    isa: Isa,
    layout: Layout,
    /// The codes in `layout`, from `start` on.
    storage: Vec<i8>,
    /// Where the codes start in `storage`: on a 64-byte boundary, so each register load reads
    /// one cache line, not parts of two.
    start: usize,
    /// For each panel, each block of 32 input rows and each column: `-128 * sum(codes)`, what
    /// the activations' offset of 128 (they enter `vpdpbusd` unsigned) adds to a block's sum.
    /// Empty for AVX2, whose activations are signed.
    offsets: Vec<i32>,
    scales: Vec<f32>,
}

impl PackedWeights {
    /// Repacks row-major `[k, n]` codes with one scale per column, for `isa`.
    pub fn new(codes: &[i8], k: usize, n: usize, scales: &[f32], isa: Isa) -> Result<Self, String> {
        if !fits(k, n) || k.checked_mul(n) != Some(codes.len()) || scales.len() != n {
            return Err(format!(
                "an int8 weight of {} codes and {} scales is not [{k}, {n}] with K a multiple \
                 of {BLOCK} and N of {WIDEST_PANEL}",
                codes.len(),
                scales.len()
            ));
        }
        let layout = isa.layout();
        let mut storage = vec![0i8; k * n + LINE - 1];
        let start = storage.as_ptr().align_offset(LINE);
        let packed = &mut storage[start..start + k * n];
        let mut at = 0;
        let mut offsets = Vec::new();
        for panel in 0..n / layout.panel {
            let columns = panel * layout.panel..(panel + 1) * layout.panel;
            for group in (0..k).step_by(layout.group) {
                for column in columns.clone() {
                    for row in group..group + layout.group {
                        packed[at] = codes[row * n + column];
                        at += 1;
                    }
                }
            }
            if isa != Isa::Avx512Vnni {
                continue;
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
            isa,
            layout,
            storage,
            start,
            offsets,
            scales: scales.to_vec(),
        })
    }

    fn codes(&self) -> &[i8] {
        &self.storage[self.start..][..self.k * self.n]
    }

    /// The packed codes of one panel.
    fn panel_codes(&self, panel: usize) -> &[i8] {
        let size = self.k * self.layout.panel;
        &self.codes()[panel * size..][..size]
    }

    /// `output = input · weight + addends` for `input` of whole rows of K values; `output`
    /// holds N values per row. `parallel_for(tasks, task)` runs `task(0..tasks)`, each exactly
    /// once, possibly on several threads at once: a task writes only its own tile of the output.
    pub fn multiply(
        &self,
        input: &[f32],
        addends: Addends<'_>,
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
        assert!(
            addends.bias.is_none_or(|bias| bias.len() == self.n)
                && addends.residual.is_none_or(|r| r.len() == output.len()),
            "a bias of N values and a residual of the output's shape"
        );
        let vector = self.isa.runs_here();
        let activations = Activations::quantize(input, self.k, vector.then_some(self.isa));
        let output = Output(output.as_mut_ptr());
        let width = self.layout.panel;
        let panels = self.n / width;
        let tiles = rows.div_ceil(TILE_ROWS);
        // A task is one tile's rows by a run of panels. A batch of many tiles gives each task
        // all the panels, so a tile's activations stay in cache while the weights stream past
        // (the other order streamed the whole batch's activations once per panel); a short
        // query of one tile is split into a task per panel, for the threads to share.
        let runs = panels.min(TASKS.div_ceil(tiles.max(1)));
        let run = panels.div_ceil(runs);
        let runs = panels.div_ceil(run);
        let task = |task: usize| {
            let row = task / runs * TILE_ROWS;
            let tile_rows = (rows - row).min(TILE_ROWS);
            let first = task % runs * run;
            // Each panel's kernel writes every sum of the tile's rows.
            let mut sums = [0f32; TILE_ROWS * WIDEST_PANEL];
            for panel in first..(first + run).min(panels) {
                if vector {
                    self.tile(&activations, row, tile_rows, panel, &mut sums);
                } else {
                    self.tile_portable(&activations, row, tile_rows, panel, &mut sums);
                }
                for (r, sums) in sums.chunks_exact_mut(width).take(tile_rows).enumerate() {
                    let at = (row + r) * self.n + panel * width;
                    if let Some(bias) = addends.bias {
                        let bias = &bias[panel * width..][..width];
                        sums.iter_mut().zip(bias).for_each(|(sum, b)| *sum += b);
                    }
                    if let Some(residual) = addends.residual {
                        let residual = &residual[at..][..width];
                        sums.iter_mut().zip(residual).for_each(|(sum, r)| *sum += r);
                    }
                    #[allow(unsafe_code)]
                    // SAFETY: `row + r < rows` and `(panel + 1) * width <= n`, so the `width`
                    // values written are inside `output` (`rows * n` long, asserted above);
                    // tasks write disjoint tiles, and `output` outlives `parallel_for`.
                    unsafe {
                        std::ptr::copy_nonoverlapping(sums.as_ptr(), output.at(at), width)
                    };
                }
            }
        };
        parallel_for(tiles * runs, &task);
    }

    /// Sums for the tile of `tile_rows` rows from `row` (a multiple of 12) and the columns of
    /// `panel`, into `sums` (one panel width per row), with the vector kernel of `self.isa`,
    /// which the caller checked this CPU runs.
    fn tile(
        &self,
        activations: &Activations,
        row: usize,
        tile_rows: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * WIDEST_PANEL],
    ) {
        assert!(self.isa.runs_here(), "{:?} on a CPU without it", self.isa);
        assert!(
            row.is_multiple_of(TILE_ROWS) && tile_rows == (activations.rows - row).min(TILE_ROWS),
            "a tile is rows {row}..{} of {}",
            row + tile_rows,
            activations.rows
        );
        #[cfg(target_arch = "x86_64")]
        {
            macro_rules! tile_of {
                ($kernel:ident: $($rows:literal)*) => {
                    match tile_rows {
                        $($rows => self.$kernel::<$rows>(activations, row, panel, sums),)*
                        _ => unreachable!("1 to {TILE_ROWS} rows"),
                    }
                };
            }
            #[allow(unsafe_code)]
            // SAFETY: the CPU runs `self.isa`, asserted above.
            unsafe {
                match self.isa {
                    Isa::Avx512Vnni => tile_of!(tile_vnni: 1 2 3 4 5 6 7 8 9 10 11 12),
                    Isa::Avx2 => tile_of!(tile_avx2: 1 2 3 4 5 6 7 8 9 10 11 12),
                }
            }
        }
    }

    /// The same sums one multiply-add at a time: for a CPU without the packing's instruction
    /// set (where the rewrite does not use this operator) and as the tests' reference.
    fn tile_portable(
        &self,
        activations: &Activations,
        row: usize,
        tile_rows: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * WIDEST_PANEL],
    ) {
        let Layout {
            panel: width,
            group,
        } = self.layout;
        let blocks = self.k / BLOCK;
        let weights = self.panel_codes(panel);
        for r in 0..tile_rows {
            let scales = &activations.scales[(row + r) * blocks..][..blocks];
            for lane in 0..width {
                let mut sum = 0f32;
                for (block, scale) in scales.iter().enumerate() {
                    let block_sum: i32 = (block * BLOCK..(block + 1) * BLOCK)
                        .map(|i| {
                            let weight =
                                weights[(i / group) * group * width + lane * group + i % group];
                            activations.signed(row + r, i) * i32::from(weight)
                        })
                        .sum();
                    sum = (block_sum as f32).mul_add(*scale, sum);
                }
                sums[r * width + lane] = sum * self.scales[panel * width + lane];
            }
        }
    }

    /// Asks for the weights [`PREFETCH_BYTES`] past `at` in the packed codes, up to their end
    /// (the next task's panel follows this one): one block's worth, `bytes` long.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(&self, at: usize, bytes: usize) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let all = self.codes();
        let ahead = (at + PREFETCH_BYTES).min(all.len() - bytes);
        for line in (ahead..ahead + bytes).step_by(LINE) {
            #[allow(unsafe_code)]
            // SAFETY: a prefetch does not access memory; the address is inside `all` anyway.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(all[line..].as_ptr())
            };
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vnni")]
    fn tile_vnni<const R: usize>(
        &self,
        activations: &Activations,
        row: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * WIDEST_PANEL],
    ) {
        use std::arch::x86_64::{
            __m512i, _mm512_add_epi32, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps,
            _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps,
            _mm512_setzero_ps, _mm512_setzero_si512, _mm512_storeu_ps,
        };
        const PANEL: usize = 16;
        const QUAD: usize = 4;
        let (k, blocks) = (self.k, self.k / BLOCK);
        // The slices each register load reads, bounds-checked once here.
        let weights = self.panel_codes(panel);
        let offsets = &self.offsets[panel * blocks * PANEL..][..blocks * PANEL];
        // The tile's activations, word by word (see `Activations::words`).
        let words = &activations.words[row * k / QUAD..][..R * k / QUAD];
        // The tile's rows' scales, row by row.
        let scales = &activations.scales[row * blocks..][..R * blocks];

        let mut totals = [_mm512_setzero_ps(); R];
        for block in 0..blocks {
            self.prefetch((panel * k + block * BLOCK) * PANEL, BLOCK * PANEL);
            assert!((block + 1) * PANEL <= offsets.len());
            #[allow(unsafe_code)]
            // SAFETY: the 16 offsets read are inside `offsets`, asserted just above.
            let start = unsafe { _mm512_loadu_si512(offsets.as_ptr().add(block * PANEL).cast()) };
            // Each row's sum of the block in two halves, the even groups' and the odd groups',
            // so that `vpdpbusd` (which adds into its own result, a latency of several cycles)
            // waits on chains half as long: a fifth less time for a query's products on the
            // Intel host (benches/README.md).
            let mut block_sums = [start; R];
            let mut odd_sums = [_mm512_setzero_si512(); R];
            for pair in (block * BLOCK / QUAD..(block + 1) * BLOCK / QUAD).step_by(2) {
                for (group, sums) in [(pair, &mut block_sums), (pair + 1, &mut odd_sums)] {
                    let at = group * QUAD * PANEL;
                    assert!(at + LINE <= weights.len());
                    #[allow(unsafe_code)]
                    // SAFETY: the 64 bytes read are inside `weights`, asserted just above.
                    let w: __m512i = unsafe { _mm512_loadu_si512(weights.as_ptr().add(at).cast()) };
                    let rows = &words[group * R..][..R];
                    for (sum, &a) in sums.iter_mut().zip(rows) {
                        *sum = _mm512_dpbusd_epi32(*sum, _mm512_set1_epi32(a as i32), w);
                    }
                }
            }
            for (((total, block_sum), odd_sum), scales) in totals
                .iter_mut()
                .zip(block_sums)
                .zip(odd_sums)
                .zip(scales.chunks_exact(blocks))
            {
                let scale = _mm512_set1_ps(scales[block]);
                let block_sum = _mm512_add_epi32(block_sum, odd_sum);
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

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn tile_avx2<const R: usize>(
        &self,
        activations: &Activations,
        row: usize,
        panel: usize,
        sums: &mut [f32; TILE_ROWS * WIDEST_PANEL],
    ) {
        use std::arch::x86_64::{
            __m128i, _mm_loadu_si128, _mm256_add_epi32, _mm256_cvtepi8_epi16, _mm256_cvtepi32_ps,
            _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_madd_epi16, _mm256_mul_ps, _mm256_set1_epi32,
            _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_storeu_ps,
        };
        const PANEL: usize = 8;
        const PAIR: usize = 2;
        // Bytes of codes one register load widens: a pair of input rows by 8 columns.
        const LOAD: usize = PAIR * PANEL;
        let (pairs, blocks) = (self.k / PAIR, self.k / BLOCK);
        let weights = self.panel_codes(panel);
        // The tile's activations, pair by pair (see `Activations::words`).
        let words = &activations.words[row * pairs..][..R * pairs];
        // The tile's rows' scales, row by row.
        let scales = &activations.scales[row * blocks..][..R * blocks];

        let mut totals = [_mm256_setzero_ps(); R];
        for block in 0..blocks {
            self.prefetch((panel * self.k + block * BLOCK) * PANEL, BLOCK * PANEL);
            let mut block_sums = [_mm256_setzero_si256(); R];
            for pair in block * BLOCK / PAIR..(block + 1) * BLOCK / PAIR {
                let at = pair * LOAD;
                assert!(at + LOAD <= weights.len());
                #[allow(unsafe_code)]
                // SAFETY: the 16 bytes read are inside `weights`, asserted just above.
                let w = unsafe { _mm_loadu_si128(weights.as_ptr().add(at).cast::<__m128i>()) };
                let w = _mm256_cvtepi8_epi16(w);
                let rows = &words[pair * R..][..R];
                for (sum, &a) in block_sums.iter_mut().zip(rows) {
                    let a = _mm256_set1_epi32(a as i32);
                    *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(a, w));
                }
            }
            for ((total, block_sum), scales) in totals
                .iter_mut()
                .zip(block_sums)
                .zip(scales.chunks_exact(blocks))
            {
                let scale = _mm256_set1_ps(scales[block]);
                *total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(block_sum), scale, *total);
            }
        }
        let column_scales = &self.scales[panel * PANEL..][..PANEL];
        #[allow(unsafe_code)]
        // SAFETY: `column_scales` is exactly 8 floats, the 32 bytes read.
        let column_scales = unsafe { _mm256_loadu_ps(column_scales.as_ptr()) };
        for (total, out) in totals.iter().zip(sums.chunks_exact_mut(PANEL)) {
            #[allow(unsafe_code)]
            // SAFETY: `out` is exactly 8 floats, the 32 bytes written.
            unsafe {
                _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(*total, column_scales))
            };
        }
    }
}

/// Activation rows rounded to int8, one scale per [`BLOCK`] values, in the 32-bit words the
/// vector kernels broadcast.
struct Activations {
    k: usize,
    rows: usize,
    /// Values a word holds: 4 bytes offset by 128 (the unsigned operand of `vpdpbusd`, and the
    /// portable loop's form) or 2 signed 16-bit values (the operand of `vpmaddwd`).
    per_word: usize,
    /// Tile by tile: for each tile of up to 12 rows, each word of the tile's rows in turn. A
    /// kernel reads a word of every row of its tile from one address, so its loop does not keep
    /// a pointer per row: twelve of them and the loop's own do not fit in 16 general registers,
    /// and the spills were measured to cost a short query a large share of its time.
    words: Vec<u32>,
    /// Row by row.
    scales: Vec<f32>,
}

impl Activations {
    /// Rounds `input` for `isa`'s kernel, which the caller checked this CPU runs, or for the
    /// portable loop.
    fn quantize(input: &[f32], k: usize, isa: Option<Isa>) -> Self {
        assert!(k.is_multiple_of(BLOCK) && input.len().is_multiple_of(k));
        assert!(
            isa.is_none_or(Isa::runs_here),
            "{isa:?} on a CPU without it"
        );
        let rows = input.len() / k;
        let per_word = if isa == Some(Isa::Avx2) { 2 } else { 4 };
        let row_words = k / per_word;
        let mut words = vec![0u32; rows * row_words];
        let mut scales = vec![0f32; input.len() / BLOCK];
        // One row's words, in order, before they go to their places in the tile.
        let mut row_codes = vec![0u32; row_words];
        let row_scales = scales.chunks_exact_mut(k / BLOCK);
        for (row, (values, scales)) in input.chunks_exact(k).zip(row_scales).enumerate() {
            match isa {
                // SAFETY: the CPU runs `isa`, asserted above.
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                Some(Isa::Avx2) => unsafe { Self::round_avx2(values, &mut row_codes, scales) },
                // SAFETY: the CPU runs `isa`, asserted above.
                #[cfg(target_arch = "x86_64")]
                #[allow(unsafe_code)]
                Some(Isa::Avx512Vnni) => unsafe {
                    Self::round_avx512(values, &mut row_codes, scales)
                },
                _ => Self::round_portable(values, &mut row_codes, scales),
            }
            // Word `w` of the row is word `w * tile_rows + row - first` of its tile.
            let first = row - row % TILE_ROWS;
            let tile_rows = (rows - first).min(TILE_ROWS);
            let tile = &mut words[first * row_words..][..tile_rows * row_words];
            for (slot, &word) in tile[row - first..]
                .iter_mut()
                .step_by(tile_rows)
                .zip(&row_codes)
            {
                *slot = word;
            }
        }
        Activations {
            k,
            rows,
            per_word,
            words,
            scales,
        }
    }

    /// Value `i` of row `row` as a signed integer, in whichever form it was rounded to.
    fn signed(&self, row: usize, i: usize) -> i32 {
        let first = row - row % TILE_ROWS;
        let tile_rows = (self.rows - first).min(TILE_ROWS);
        let row_words = self.k / self.per_word;
        let word = self.words[first * row_words + i / self.per_word * tile_rows + row - first];
        let at = i % self.per_word;
        if self.per_word == 4 {
            i32::from((word >> (8 * at)) as u8) - 128
        } else {
            i32::from((word >> (16 * at)) as u16 as i16)
        }
    }

    /// One block's scale (its largest magnitude over 127) and the factor that maps it onto
    /// [-127, 127].
    fn scale(largest: f32) -> (f32, f32) {
        let inverse = if largest > 0.0 { 127.0 / largest } else { 0.0 };
        (largest / 127.0, inverse)
    }

    /// Rounds `input` into `words` of 4 codes offset by 128 (the first in the lowest byte), and
    /// `scales`, a block at a time.
    fn round_portable(input: &[f32], words: &mut [u32], scales: &mut [f32]) {
        let blocks = input
            .chunks_exact(BLOCK)
            .zip(words.chunks_exact_mut(BLOCK / 4));
        for ((values, words), scale) in blocks.zip(scales) {
            let largest = values.iter().fold(0f32, |m, v| m.max(v.abs()));
            let inverse;
            (*scale, inverse) = Self::scale(largest);
            for (word, values) in words.iter_mut().zip(values.chunks_exact(4)) {
                // Within [-127, 127] by the choice of scale, so within [1, 255] once offset.
                let code = |v: f32| ((v * inverse).round_ties_even() as i32 + 128) as u8;
                *word = u32::from_le_bytes([
                    code(values[0]),
                    code(values[1]),
                    code(values[2]),
                    code(values[3]),
                ]);
            }
        }
    }

    /// [`Activations::round_portable`] 16 values at a time (rounding to nearest even, as
    /// `vcvtps2dq` does by default); the scalar loop was a third of a short query's products.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn round_avx512(input: &[f32], words: &mut [u32], scales: &mut [f32]) {
        use std::arch::x86_64::{
            _mm_storeu_si128, _mm512_abs_ps, _mm512_add_epi32, _mm512_cvtepi32_epi8,
            _mm512_cvtps_epi32, _mm512_loadu_ps, _mm512_max_ps, _mm512_mul_ps,
            _mm512_reduce_max_ps, _mm512_set1_epi32, _mm512_set1_ps,
        };
        let blocks = input
            .chunks_exact(BLOCK)
            .zip(words.chunks_exact_mut(BLOCK / 4));
        for ((values, words), scale) in blocks.zip(scales) {
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
            for (half, words) in [low, high].into_iter().zip(words.chunks_exact_mut(4)) {
                let rounded = _mm512_cvtps_epi32(_mm512_mul_ps(half, inverse));
                let bytes = _mm512_cvtepi32_epi8(_mm512_add_epi32(rounded, offset));
                #[allow(unsafe_code)]
                // SAFETY: `words` is exactly 4 words, the 16 bytes written.
                unsafe {
                    _mm_storeu_si128(words.as_mut_ptr().cast(), bytes)
                };
            }
        }
    }

    /// The same rounding 8 values at a time, into signed 16-bit pairs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn round_avx2(input: &[f32], pairs: &mut [u32], scales: &mut [f32]) {
        use std::arch::x86_64::{
            __m256i, _mm_cvtss_f32, _mm_max_ps, _mm_movehl_ps, _mm_shuffle_ps, _mm256_andnot_ps,
            _mm256_castps256_ps128, _mm256_cvtps_epi32, _mm256_extractf128_ps, _mm256_loadu_ps,
            _mm256_max_ps, _mm256_mul_ps, _mm256_packs_epi32, _mm256_permute4x64_epi64,
            _mm256_set1_ps, _mm256_storeu_si256,
        };
        let blocks = input
            .chunks_exact(BLOCK)
            .zip(pairs.chunks_exact_mut(BLOCK / 2));
        for ((values, pairs), scale) in blocks.zip(scales) {
            let quarters: [_; 4] = std::array::from_fn(|q| {
                let quarter = &values[q * 8..][..8];
                #[allow(unsafe_code)]
                // SAFETY: `quarter` is exactly 8 floats, the 32 bytes read.
                unsafe {
                    _mm256_loadu_ps(quarter.as_ptr())
                }
            });
            let sign = _mm256_set1_ps(-0.0);
            let [a, b, c, d] = quarters.map(|q| _mm256_andnot_ps(sign, q));
            let largest = _mm256_max_ps(_mm256_max_ps(a, b), _mm256_max_ps(c, d));
            let half = _mm_max_ps(
                _mm256_castps256_ps128(largest),
                _mm256_extractf128_ps::<1>(largest),
            );
            let half = _mm_max_ps(half, _mm_movehl_ps(half, half));
            let largest = _mm_cvtss_f32(_mm_max_ps(half, _mm_shuffle_ps::<1>(half, half)));
            let inverse;
            (*scale, inverse) = Self::scale(largest);
            let inverse = _mm256_set1_ps(inverse);
            let [a, b, c, d] = quarters.map(|q| _mm256_cvtps_epi32(_mm256_mul_ps(q, inverse)));
            for (halves, pairs) in [(a, b), (c, d)].into_iter().zip(pairs.chunks_exact_mut(8)) {
                // `packs` narrows within each 128-bit lane: a0-3 b0-3 a4-7 b4-7; the
                // permutation puts the 64-bit quarters back in order.
                let packed = _mm256_packs_epi32(halves.0, halves.1);
                let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
                #[allow(unsafe_code)]
                // SAFETY: `pairs` is exactly 8 words, the 32 bytes written.
                unsafe {
                    _mm256_storeu_si256(pairs.as_mut_ptr().cast::<__m256i>(), ordered)
                };
            }
        }
    }
}

/// What a product adds to each of its rows as it writes them: `bias` (N values) then the row of
/// `residual` (the output's shape).
#[derive(Clone, Copy, Default)]
pub struct Addends<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
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
            OperatorInput::optional(TensorElementType::Float32),
            OperatorInput::optional(TensorElementType::Float32),
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
        let isa = Isa::detect().ok_or_else(|| {
            ort::Error::new(format!(
                "{OPERATOR} needs AVX2 or AVX-512 VNNI, which this CPU lacks"
            ))
        })?;
        PackedWeights::new(codes, k as usize, n as usize, scales, isa).map_err(ort::Error::new)
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
        let bias = context.input(3)?;
        let bias = optional_values(
            &bias,
            "bias",
            |shape| shape.iter().product::<i64>() == self.n as i64,
            format_args!("{} values", self.n),
        )?;
        let residual = context.input(4)?;
        let residual = optional_values(
            &residual,
            "residual",
            |shape| shape == output_shape,
            format_args!("the output's shape {output_shape:?}"),
        )?;
        let mut output = context.output(0, output_shape)?.ok_or_else(missing)?;
        let (_, output) = output.try_extract_tensor_mut::<f32>()?;
        let mut result = Ok(());
        self.multiply(input, Addends { bias, residual }, output, |tasks, task| {
            result = context.par_for(tasks, 0, task);
        });
        result
    }
}

/// The values of an optional input, when given, refused unless `fits` its shape; `name` and
/// `expected` say what it is and should be.
fn optional_values<'v>(
    value: &'v Option<ValueRef<'_>>,
    name: &str,
    fits: impl FnOnce(&[i64]) -> bool,
    expected: std::fmt::Arguments<'_>,
) -> ort::Result<Option<&'v [f32]>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let (shape, values) = value.try_extract_tensor::<f32>()?;
    if !fits(shape) {
        return Err(ort::Error::new(format!(
            "{OPERATOR} got a {name} of shape {shape:?}, expected {expected}"
        )));
    }
    Ok(Some(values))
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

    /// Both layouts: each multiplied by its vector kernel where this CPU runs it, else by the
    /// portable loop.
    const ISAS: [Isa; 2] = [Isa::Avx512Vnni, Isa::Avx2];

    #[test]
    fn the_product_is_the_weights_product_within_the_rounding_of_the_activations() {
        let (k, n) = (96, 64);
        let (codes, scales) = weights(k, n);
        for isa in ISAS {
            let packed = PackedWeights::new(&codes, k, n, &scales, isa).expect("fits");
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
                packed.multiply(&input, Addends::default(), &mut output, sequential);
                let exact = exact_product(&input, &codes, &scales, k);
                for (got, want) in output.iter().zip(&exact) {
                    // Each activation is off by at most half a step (|x| <= 1, so 0.5/127),
                    // each weight at most 127 * 1.99e-3: K of them bound the error.
                    let bound = k as f64 * (0.5 / 127.0) * 127.0 * 1.99e-3;
                    assert!(
                        (f64::from(*got) - want).abs() <= bound,
                        "{isa:?}, {rows} rows: {got} against {want}"
                    );
                }
                if rows == 5 {
                    assert!(output[2 * n..3 * n].iter().all(|&v| v == 0.0));
                }
            }
        }
    }

    #[test]
    fn the_vector_tiles_add_up_what_the_portable_loop_does() {
        let (k, n) = (384, 96);
        let (codes, scales) = weights(k, n);
        let checked: Vec<_> = ISAS.into_iter().filter(|isa| isa.runs_here()).collect();
        if checked.is_empty() {
            eprintln!("skipped: this CPU has neither AVX2 nor AVX-512 VNNI");
            return;
        }
        let mut next = sequence(3);
        // Every tile height from 1 to 12 rows, and several tiles.
        for rows in (1..=14).chain([25]) {
            let input: Vec<f32> = (0..rows * k)
                .map(|_| (next() % 4001) as f32 / 100.0 - 20.0)
                .collect();
            let portable = Activations::quantize(&input, k, None);
            let values = |a: &Activations| -> Vec<i32> {
                (0..rows)
                    .flat_map(|row| (0..k).map(move |i| (row, i)))
                    .map(|(row, i)| a.signed(row, i))
                    .collect()
            };
            let expected = values(&portable);
            // The largest magnitude of a block rounds to 127 or -127, the widest codes.
            assert!(expected.contains(&127) && expected.contains(&-127));
            for &isa in &checked {
                let packed = PackedWeights::new(&codes, k, n, &scales, isa).expect("fits");
                let activations = Activations::quantize(&input, k, Some(isa));
                assert_eq!(activations.scales, portable.scales, "{isa:?} scales");
                assert_eq!(values(&activations), expected, "{isa:?} rounded alike");
                for panel in 0..n / isa.layout().panel {
                    for row in (0..rows).step_by(TILE_ROWS) {
                        let tile_rows = (rows - row).min(TILE_ROWS);
                        let mut vector = [0f32; TILE_ROWS * WIDEST_PANEL];
                        let mut reference = [0f32; TILE_ROWS * WIDEST_PANEL];
                        packed.tile(&activations, row, tile_rows, panel, &mut vector);
                        packed.tile_portable(&activations, row, tile_rows, panel, &mut reference);
                        // The same integer sums, scaled and added by the same fused
                        // multiply-adds.
                        assert_eq!(vector, reference, "{isa:?}, {rows} rows, panel {panel}");
                    }
                }
            }
        }
    }

    #[test]
    fn tasks_on_several_threads_write_what_one_thread_and_one_row_at_a_time_write() {
        let (k, n) = (64, 128);
        let (codes, scales) = weights(k, n);
        for isa in ISAS {
            let packed = PackedWeights::new(&codes, k, n, &scales, isa).expect("fits");
            // One tile (a task per panel) and many (a task per tile and run of panels).
            for rows in [6, 200] {
                let input: Vec<f32> = (0..rows * k).map(|i| (i % 17) as f32 - 8.0).collect();
                let mut alone = vec![0f32; rows * n];
                packed.multiply(&input, Addends::default(), &mut alone, sequential);
                let mut together = vec![0f32; rows * n];
                packed.multiply(&input, Addends::default(), &mut together, |tasks, task| {
                    std::thread::scope(|scope| {
                        for t in 0..tasks {
                            scope.spawn(move || task(t));
                        }
                    })
                });
                assert_eq!(alone, together, "{isa:?}, {rows} rows");
                let mut row_by_row = vec![f32::NAN; rows * n];
                for (input, output) in input.chunks_exact(k).zip(row_by_row.chunks_exact_mut(n)) {
                    packed.multiply(input, Addends::default(), output, sequential);
                }
                assert_eq!(alone, row_by_row, "{isa:?}, {rows} rows");
            }
        }
    }

    #[test]
    fn the_bias_then_the_residual_are_added_as_the_rows_are_written() {
        let (k, n) = (64, 32);
        let (codes, scales) = weights(k, n);
        let rows = 14;
        let input: Vec<f32> = (0..rows * k).map(|i| (i % 13) as f32 / 4.0 - 1.5).collect();
        let bias: Vec<f32> = (0..n).map(|c| c as f32 * 0.37 - 3.0).collect();
        let residual: Vec<f32> = (0..rows * n).map(|i| (i % 7) as f32 * 1.9 - 5.0).collect();
        for isa in ISAS {
            let packed = PackedWeights::new(&codes, k, n, &scales, isa).expect("fits");
            let mut product = vec![0f32; rows * n];
            packed.multiply(&input, Addends::default(), &mut product, sequential);
            let mut expected = product.clone();
            for (row, expected) in expected.chunks_exact_mut(n).enumerate() {
                for (c, value) in expected.iter_mut().enumerate() {
                    *value = *value + bias[c] + residual[row * n + c];
                }
            }
            let mut output = vec![f32::NAN; rows * n];
            let both = Addends {
                bias: Some(&bias),
                residual: Some(&residual),
            };
            packed.multiply(&input, both, &mut output, sequential);
            assert_eq!(output, expected, "{isa:?}: the sums the unfused Adds give");
            let residual_only = Addends {
                bias: None,
                residual: Some(&residual),
            };
            packed.multiply(&input, residual_only, &mut output, sequential);
            let unbiased: Vec<f32> = product.iter().zip(&residual).map(|(p, r)| p + r).collect();
            assert_eq!(output, unbiased, "{isa:?}: a residual without a bias");
        }
    }

    #[test]
    fn weights_that_do_not_fill_whole_tiles_are_refused() {
        let new =
            |codes: &[i8], k, n, scales: &[f32]| PackedWeights::new(codes, k, n, scales, Isa::Avx2);
        let (codes, scales) = weights(40, 32);
        let error = new(&codes, 40, 32, &scales).err().expect("K not 32s");
        assert!(error.contains("K a multiple of 32"), "{error}");
        let (codes, scales) = weights(32, 40);
        assert!(new(&codes, 32, 40, &scales).is_err());
        let (codes, scales) = weights(32, 32);
        assert!(new(&codes, 32, 32, &scales[..31]).is_err());
        assert!(new(&codes[..100], 32, 32, &scales).is_err());
        assert!(new(&[], 0, 0, &[]).is_err());
        // A shape whose size overflows (a corrupt model's dimensions) is refused, not a panic.
        assert!(new(&codes, 1 << 60, 32, &scales).is_err());
    }
}
