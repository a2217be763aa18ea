//! The rewrites: attention into `MultiHeadAttention`, GELU into `BiasGelu`, weight products
//! over int8 codes into int8 products, and lookups in int8 tables before their dequantisation.

use std::collections::{HashMap, HashSet};

use super::{Products, graph::*, wire::*};
use crate::embed::int8;

pub(super) const CONTRIB_DOMAIN: &str = "com.microsoft";
/// Values of a row that share one activation scale in an int8 product.
pub(super) const INT8_BLOCK: usize = int8::BLOCK;
/// `MatMulNBits`' `accuracy_level` that multiplies in int8.
pub(super) const INT8_COMPUTE: u64 = 4;

impl<'a> Graph<'a> {
    /// `h + bias` where `bias` is constant: returns `(h, bias)`.
    pub(super) fn bias_add(
        &self,
        node: &Node,
        constants: &HashSet<String>,
    ) -> Option<(String, String)> {
        if !node.is("Add") || node.inputs.len() != 2 {
            return None;
        }
        let [a, b] = [&node.inputs[0], &node.inputs[1]];
        match (constants.contains(a), constants.contains(b)) {
            (false, true) => Some((a.clone(), b.clone())),
            (true, false) => Some((b.clone(), a.clone())),
            _ => None,
        }
    }

    /// Replaces each layer's attention after the Q/K/V products with one `MultiHeadAttention`
    /// node. A layer is three constant-weight `MatMul`s of the same input, each plus a constant
    /// bias, and the next constant-weight `MatMul` (the output projection), whose input is the
    /// attention's result and depends on all three.
    pub(super) fn fuse_attention(&mut self, heads: usize) -> usize {
        let Some(mask) = self.inputs.iter().find(|i| *i == "attention_mask").cloned() else {
            return 0;
        };
        let constants = self.constants();
        let producers = self.producers();
        let consumers = self.consumers();
        let projections: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.is("MatMul")
                    && n.inputs.len() == 2
                    && !constants.contains(&n.inputs[0])
                    && constants.contains(&n.inputs[1])
            })
            .collect();
        // Per layer: the input, the q, k and v projections' outputs and biases, and the value
        // the output projection reads.
        let mut layers = Vec::new();
        let mut at = 0;
        while at + 3 < projections.len() {
            let [q, k, v, o] = [0, 1, 2, 3].map(|j| &self.nodes[projections[at + j]]);
            let same_input = q.inputs[0] == k.inputs[0] && k.inputs[0] == v.inputs[0];
            let biased: Option<Vec<(String, String)>> = [q, k, v]
                .iter()
                .map(|p| {
                    let [add] = consumers.get(&p.outputs[0])?.as_slice() else {
                        return None;
                    };
                    let (_, bias) = self.bias_add(&self.nodes[*add], &constants)?;
                    Some((p.outputs[0].clone(), bias))
                })
                .collect();
            match biased {
                Some(projected)
                    if same_input && self.depends_on_all(&o.inputs[0], [q, k, v], &producers) =>
                {
                    layers.push((projected, o.inputs[0].clone()));
                    at += 4;
                }
                _ => at += 1,
            }
        }
        if layers.is_empty() {
            return 0;
        }

        let mask_i32 = format!("{mask}_int32");
        let mut replacements: HashMap<String, Vec<Node>> = HashMap::new();
        for (layer, (projected, output)) in layers.iter().enumerate() {
            let bias = format!("isa_fused_{layer}_qkv_bias");
            let biases_in: Vec<&str> = projected.iter().map(|(_, b)| b.as_str()).collect();
            let [(q, _), (k, _), (v, _)] = projected.as_slice() else {
                unreachable!("three projections per layer");
            };
            replacements.insert(
                output.clone(),
                vec![
                    Node::new("Concat", format!("{bias}_concat"), &biases_in, &bias)
                        .with(int_attribute("axis", 0)),
                    Node::new(
                        "MultiHeadAttention",
                        format!("isa_fused_{layer}_attention"),
                        &[q, k, v, &bias, &mask_i32],
                        output,
                    )
                    .in_domain(CONTRIB_DOMAIN)
                    .with(int_attribute("num_heads", heads as u64)),
                ],
            );
        }
        let cast = Node::new("Cast", format!("{mask_i32}_cast"), &[&mask], &mask_i32)
            .with(int_attribute("to", TENSOR_INT32));
        self.nodes.insert(0, cast);
        self.replace_producers(replacements)
    }

    /// Whether `value` is computed (transitively) from the outputs of all of `nodes`.
    pub(super) fn depends_on_all(
        &self,
        value: &str,
        nodes: [&Node; 3],
        producers: &HashMap<String, usize>,
    ) -> bool {
        let mut wanted: HashSet<&str> = nodes.iter().map(|n| n.outputs[0].as_str()).collect();
        let mut seen = HashSet::new();
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            wanted.remove(v);
            if let Some(&p) = producers.get(v) {
                stack.extend(self.nodes[p].inputs.iter().map(String::as_str));
            }
        }
        wanted.is_empty()
    }

    /// Replaces `x * 0.5 * (1 + erf(x / c))` over `x = h + bias` with `BiasGelu(h, bias)`.
    pub(super) fn fuse_gelu(&mut self) -> usize {
        let constants = self.constants();
        let producers = self.producers();
        let consumers = self.consumers();
        let only_consumer = |value: &str, op: &str| -> Option<usize> {
            match consumers.get(value)?.as_slice() {
                [one] if self.nodes[*one].is(op) => Some(*one),
                _ => None,
            }
        };
        let mut replacements = HashMap::new();
        for erf in self.nodes.iter().filter(|n| n.is("Erf")) {
            let fused = (|| {
                let div = &self.nodes[*producers.get(&erf.inputs[0])?];
                if !div.is("Div") || !constants.contains(div.inputs.get(1)?) {
                    return None;
                }
                let x = &div.inputs[0];
                let (h, bias) = self.bias_add(&self.nodes[*producers.get(x)?], &constants)?;
                let plus_one = only_consumer(&erf.outputs[0], "Add")?;
                let half = only_consumer(&self.nodes[plus_one].outputs[0], "Mul")?;
                let gelu = &self.nodes[only_consumer(&self.nodes[half].outputs[0], "Mul")?];
                if !gelu.inputs.contains(x) {
                    return None;
                }
                let output = gelu.outputs[0].clone();
                let node = Node::new(
                    "BiasGelu",
                    format!("{output}_bias_gelu"),
                    &[&h, &bias],
                    &output,
                );
                Some((output, vec![node.in_domain(CONTRIB_DOMAIN)]))
            })();
            replacements.extend(fused);
        }
        self.replace_producers(replacements)
    }

    /// Replaces each `MatMul` by a weight stored as int8 codes with one scale per output column
    /// with an int8 product over the same codes (see the module's notes), except the value
    /// projections that `MultiHeadAttention` reads. Runs after the other fusions.
    pub(super) fn int8_matmuls(&mut self, products: Products) -> usize {
        let producers = self.producers();
        let tensors = self.tensors();
        let values: HashSet<String> = self
            .nodes
            .iter()
            .filter(|n| n.op_type == "MultiHeadAttention" && n.inputs.len() > 2)
            .map(|n| n.inputs[2].clone())
            .collect();
        let mut replaced = 0;
        for index in 0..self.nodes.len() {
            let node = &self.nodes[index];
            if !node.is("MatMul") || node.inputs.len() != 2 || values.contains(&node.outputs[0]) {
                continue;
            }
            let Some(((codes_name, codes), (scales_name, scales))) =
                self.int8_weight(&node.inputs[1], &producers, &tensors)
            else {
                continue;
            };
            let (k, n) = (codes.dims[0] as usize, codes.dims[1] as usize);
            let name = format!("isa_int8_{index}");
            let (input, output) = (node.inputs[0].clone(), node.outputs[0].clone());
            let product = match products {
                Products::F32 => continue,
                Products::IsaInt8 if !int8::fits(k, n) => continue,
                Products::IsaInt8 => Node::new(
                    int8::OPERATOR,
                    name,
                    &[&input, codes_name, scales_name],
                    &output,
                )
                .in_domain(int8::DOMAIN),
                Products::OnnxRuntimeInt8 => {
                    let (codes_name, scales_name) =
                        self.repack_for_matmul_nbits(&name, codes, scales);
                    Node::new(
                        "MatMulNBits",
                        name,
                        &[&input, &codes_name, &scales_name],
                        &output,
                    )
                    .in_domain(CONTRIB_DOMAIN)
                    .with(int_attribute("K", k as u64))
                    .with(int_attribute("N", n as u64))
                    .with(int_attribute("bits", 8))
                    .with(int_attribute("block_size", INT8_BLOCK as u64))
                    .with(int_attribute("accuracy_level", INT8_COMPUTE))
                }
            };
            self.nodes[index] = product;
            replaced += 1;
        }
        replaced
    }

    /// Folds into each `ai.isa.Int8MatMul` the `Add` of a bias (an initializer of N floats)
    /// that alone reads its result, then the `Add` of a value computed at run time (the
    /// residual) that alone reads that: the product adds both as it writes its tiles. The
    /// fused node takes the place of the last `Add`, where all its inputs have been computed.
    /// A residual must have the product's shape, which the kernel checks when it runs. Returns
    /// how many `Add`s were folded.
    pub(super) fn fold_adds_into_int8_products(&mut self) -> usize {
        let tensors = self.tensors();
        let constants = self.constants();
        let consumers = self.consumers();
        // The one node that reads `value`, where the graph does not output it too.
        let sole_reader = |value: &str| match consumers.get(value).map(Vec::as_slice) {
            Some(&[reader]) if !self.outputs.iter().any(|o| o == value) => Some(reader),
            _ => None,
        };
        let mut fused = HashMap::new();
        let mut removed = HashSet::new();
        let mut folded = 0;
        for (index, node) in self.nodes.iter().enumerate() {
            let is_product = node.op_type == int8::OPERATOR && node.domain == int8::DOMAIN;
            if !is_product || node.inputs.len() != 3 {
                continue;
            }
            let columns = tensors
                .get(&node.inputs[1])
                .and_then(|c| c.dims.get(1).copied());
            let is_bias = |b: &String| {
                tensors
                    .get(b)
                    .is_some_and(|t| t.holds(TENSOR_FLOAT, 4) && t.elements() == columns)
            };
            // The Adds taken in, in order, and the value the last of them computes.
            let mut adds = Vec::new();
            let mut result = &node.outputs[0];
            let mut bias = None;
            if let Some(reader) = sole_reader(result) {
                let add = &self.nodes[reader];
                if let Some((_, b)) = self.bias_add(add, &constants).filter(|(_, b)| is_bias(b)) {
                    bias = Some(b);
                    adds.push(reader);
                    result = &add.outputs[0];
                }
            }
            let mut residual = None;
            if let Some(reader) = sole_reader(result) {
                let add = &self.nodes[reader];
                let other = match add.inputs.as_slice() {
                    [a, b] if a == result => Some(b),
                    [a, b] if b == result => Some(a),
                    _ => None,
                };
                if let Some(other) = other.filter(|r| add.is("Add") && !constants.contains(*r)) {
                    residual = Some(other.clone());
                    adds.push(reader);
                    result = &add.outputs[0];
                }
            }
            let Some(&last) = adds.last() else {
                continue;
            };
            let mut product = node.clone();
            match (bias, residual) {
                (bias, Some(residual)) => {
                    product.inputs.extend([bias.unwrap_or_default(), residual])
                }
                (Some(bias), None) => product.inputs.push(bias),
                (None, None) => {}
            }
            product.outputs = vec![result.clone()];
            folded += adds.len();
            removed.insert(index);
            removed.extend(&adds[..adds.len() - 1]);
            fused.insert(last, product);
        }
        let nodes = std::mem::take(&mut self.nodes).into_iter().enumerate();
        self.nodes = nodes
            .filter(|(index, _)| !removed.contains(index))
            .map(|(index, node)| fused.remove(&index).unwrap_or(node))
            .collect();
        folded
    }

    /// Adds initializers named after `name` holding a `[K, N]` weight's codes and scales as
    /// `MatMulNBits` reads them; returns their names.
    pub(super) fn repack_for_matmul_nbits(
        &mut self,
        name: &str,
        codes: &Tensor<'_>,
        scales: &Tensor<'_>,
    ) -> (String, String) {
        let (k, n) = (codes.dims[0] as usize, codes.dims[1] as usize);
        let blocks = k / INT8_BLOCK;
        // MatMulNBits reads each output column's codes contiguously, as unsigned bytes around
        // its default zero point of 128 (`code ^ 0x80` is `code + 128`).
        let mut columns = vec![0u8; k * n];
        for (row, codes) in codes.raw.chunks_exact(n).enumerate() {
            for (column, &code) in codes.iter().enumerate() {
                columns[column * k + row] = code ^ 0x80;
            }
        }
        let block_scales: Vec<u8> = scales
            .raw
            .chunks_exact(4)
            .flat_map(|scale| scale.repeat(blocks))
            .collect();
        let codes_name = format!("{name}_codes");
        let scales_name = format!("{name}_scales");
        self.new_initializers.push(Tensor::encode(
            &codes_name,
            &[n, blocks, INT8_BLOCK],
            TENSOR_UINT8,
            &columns,
        ));
        self.new_initializers.push(Tensor::encode(
            &scales_name,
            &[n * blocks],
            TENSOR_FLOAT,
            &block_scales,
        ));
        (codes_name, scales_name)
    }

    /// The codes (`[K, N]` int8, K a whole number of blocks) and scales (N floats) of a weight
    /// the graph computes as `Cast(codes) * scales`, each with its name.
    #[allow(clippy::type_complexity)]
    pub(super) fn int8_weight<'t>(
        &self,
        weight: &str,
        producers: &HashMap<String, usize>,
        tensors: &'t HashMap<String, Tensor<'a>>,
    ) -> Option<((&'t String, &'t Tensor<'a>), (&'t String, &'t Tensor<'a>))> {
        let (codes, scales) = self.dequantised(weight, producers, tensors)?;
        let [k, n] = codes.1.dims[..] else {
            return None;
        };
        let well_formed = codes.1.holds(TENSOR_INT8, 1)
            && k > 0
            && n > 0
            && k % INT8_BLOCK as u64 == 0
            && scales.1.holds(TENSOR_FLOAT, 4)
            && scales.1.elements() == Some(n);
        well_formed.then_some((codes, scales))
    }

    /// The initializers `value` is computed from as `Cast(codes) * scales`, each with its name.
    #[allow(clippy::type_complexity)]
    fn dequantised<'t>(
        &self,
        value: &str,
        producers: &HashMap<String, usize>,
        tensors: &'t HashMap<String, Tensor<'a>>,
    ) -> Option<((&'t String, &'t Tensor<'a>), (&'t String, &'t Tensor<'a>))> {
        let mul = &self.nodes[*producers.get(value)?];
        if !mul.is("Mul") || mul.inputs.len() != 2 {
            return None;
        }
        let cast_of = |value: &str| {
            let cast = &self.nodes[*producers.get(value)?];
            (cast.is("Cast") && cast.inputs.len() == 1).then(|| cast.inputs[0].as_str())
        };
        let (codes, scales) = match (cast_of(&mul.inputs[0]), cast_of(&mul.inputs[1])) {
            (Some(codes), None) => (codes, &mul.inputs[1]),
            (None, Some(codes)) => (codes, &mul.inputs[0]),
            _ => return None,
        };
        Some((
            tensors.get_key_value(codes)?,
            tensors.get_key_value(scales)?,
        ))
    }

    /// Replaces each row lookup (`Gather` on axis 0) in a table stored as int8 codes with one
    /// scale per row or per column by a lookup in the codes, dequantised after it.
    pub(super) fn int8_lookups(&mut self) -> usize {
        let producers = self.producers();
        let tensors = self.tensors();
        let mut replacements = HashMap::new();
        for node in &self.nodes {
            let row_lookup = node
                .attributes
                .iter()
                .all(|a| *a == int_attribute("axis", 0));
            if !node.is("Gather") || node.inputs.len() != 2 || !row_lookup {
                continue;
            }
            let Some(((codes_name, codes), (scales_name, scales))) =
                self.dequantised(&node.inputs[0], &producers, &tensors)
            else {
                continue;
            };
            let [rows, columns] = codes.dims[..] else {
                continue;
            };
            let per_row = scales.dims == [rows, 1];
            let per_column = scales.dims == [1, columns] || scales.dims == [columns];
            if !codes.holds(TENSOR_INT8, 1)
                || !scales.holds(TENSOR_FLOAT, 4)
                || !(per_row || per_column)
            {
                continue;
            }
            let (indices, output) = (&node.inputs[1], &node.outputs[0]);
            let lookup = |table: &str, out: &str| {
                let mut gather = node.clone();
                gather.name = format!("{out}_lookup");
                gather.inputs = vec![table.to_owned(), indices.clone()];
                gather.outputs = vec![out.to_owned()];
                gather
            };
            let (row_codes, row_values) = (format!("{output}_codes"), format!("{output}_values"));
            let mut nodes = vec![
                lookup(codes_name, &row_codes),
                Node::new("Cast", format!("{output}_cast"), &[&row_codes], &row_values)
                    .with(int_attribute("to", TENSOR_FLOAT)),
            ];
            let row_scales = if per_row {
                let name = format!("{output}_scales");
                nodes.push(lookup(scales_name, &name));
                name
            } else {
                scales_name.clone()
            };
            nodes.push(Node::new(
                "Mul",
                format!("{output}_dequantise"),
                &[&row_values, &row_scales],
                output,
            ));
            replacements.insert(output.clone(), nodes);
        }
        self.replace_producers(replacements)
    }
}
