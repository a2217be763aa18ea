//! Rewrites a BERT encoder's ONNX graph into ONNX Runtime's fused CPU operators.
//!
//! Exporters such as `torch.export` write each attention layer as some twenty small nodes
//! (projections, reshapes, transposes, a scaled product, softmax and a NaN guard around it) and
//! GELU as five. ONNX Runtime's own fusions do not recognise these forms, so a short query pays
//! for some three hundred kernel launches, each a thread-pool round trip on a small machine. This
//! pass replaces, per layer:
//!
//! - everything from the Q, K and V projections' products to the attention output with one
//!   `com.microsoft.MultiHeadAttention` (the three biases concatenated by a `Concat` that ONNX
//!   Runtime folds at load). The products stay separate nodes, so Q and K can be multiplied in
//!   int8 while V is not; with int8 products around it, this was also a fifth faster than
//!   `com.microsoft.Attention`, which takes the three weights as one f32 matrix;
//! - `x * 0.5 * (1 + erf(x / sqrt 2))` over `x = h + bias` with `BiasGelu(h, bias)`.
//!
//! When asked to, it also runs weight products in int8: each `MatMul` over weights stored as
//! int8 codes with one scale per output column (dequantised in the graph by `Cast` and `Mul`)
//! becomes either the embedder's own `ai.isa.Int8MatMul` over those codes (see `super::int8`) or
//! a `com.microsoft.MatMulNBits` over the same codes repacked, with `accuracy_level` 4. Both
//! quantise the activations at run time, one scale per 32 values of a row, and multiply in int8.
//! The weights are the model's own, so the only new error is the activations' rounding. The
//! value projections stay in f32: they were the products most sensitive to that rounding (all
//! products in int8 brought the worst cosine with the fp32 reference to 0.9951, everything but V
//! to 0.9957).
//!
//! Layer norms stay as they are, and ONNX Runtime's own fusion of them into
//! `SkipLayerNormalization` is turned off for the rewritten model ([`DISABLED_OPTIMIZERS`]): on a
//! short query that operator was measured slower than the two `Add`s and the
//! `LayerNormalization` it replaces (figures in `benches/README.md`).
//!
//! Only the protobuf fields the pass needs are decoded; everything else is copied byte for byte.
//! It matches shapes of the graph, not the constants inside it, so the embedder runs the result
//! against the original model on a probe batch before using it (see `super::choose_model`).

use std::collections::{HashMap, HashSet};

use super::int8;

/// What the rewrite replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FusionReport {
    /// Attention blocks now one `MultiHeadAttention` node each.
    pub attention: usize,
    /// GELUs now one `BiasGelu` each.
    pub gelu: usize,
    /// Weight products now multiplied in int8, by [`FusionReport::products`].
    pub int8_matmuls: usize,
    /// How the weight products stored as int8 codes are multiplied.
    pub products: Products,
    /// Nodes in the graph before the rewrite.
    pub nodes_before: usize,
    /// Nodes in the graph after it (constant folding at load removes more).
    pub nodes_after: usize,
}

/// How the rewrite multiplies the weight products a model stores as int8 codes (all but the
/// value projections, which stay in f32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Products {
    /// As the model does: in f32, over weights dequantised at load.
    #[default]
    F32,
    /// In int8 by ONNX Runtime's `com.microsoft.MatMulNBits`.
    OnnxRuntimeInt8,
    /// In int8 by the embedder's own `ai.isa.Int8MatMul`, which needs AVX2 or AVX-512 VNNI.
    IsaInt8,
}

/// ONNX Runtime optimisers to turn off when running a rewritten model (see the module's notes).
pub const DISABLED_OPTIMIZERS: &str = "SkipLayerNormFusion";

/// The rewritten model, or `None` when the bytes are not a model this pass understands or
/// nothing in it matched. `products` says how to multiply the remaining weight products.
pub fn fuse(
    model: &[u8],
    attention_heads: usize,
    products: Products,
) -> Option<(Vec<u8>, FusionReport)> {
    let model_fields = fields(model)?;
    let graph_field = model_fields.iter().find(|f| f.number == MODEL_GRAPH)?;
    let mut graph = Graph::parse(graph_field.bytes()?)?;
    let nodes_before = graph.nodes.len();
    let mut report = FusionReport {
        attention: graph.fuse_attention(attention_heads),
        gelu: graph.fuse_gelu(),
        nodes_before,
        ..FusionReport::default()
    };
    if report.attention + report.gelu == 0 {
        return None;
    }
    graph.remove_dead_nodes();
    if products != Products::F32 {
        report.products = products;
        report.int8_matmuls = graph.int8_matmuls(products);
        graph.remove_dead_nodes();
    }
    report.nodes_after = graph.nodes.len();

    let mut out = Vec::with_capacity(model.len() + 4096);
    let mut missing_domains: Vec<&str> = vec![CONTRIB_DOMAIN];
    if products == Products::IsaInt8 {
        missing_domains.push(int8::DOMAIN);
    }
    for field in &model_fields {
        match field.number {
            MODEL_GRAPH => put_bytes(&mut out, MODEL_GRAPH, &graph.encode()),
            MODEL_OPSET_IMPORT => {
                let opset = fields(field.bytes()?)?;
                missing_domains.retain(|domain| {
                    !opset
                        .iter()
                        .any(|f| f.number == 1 && f.bytes() == Some(domain.as_bytes()))
                });
                out.extend_from_slice(field.raw);
            }
            _ => out.extend_from_slice(field.raw),
        }
    }
    for domain in missing_domains {
        let mut opset = Vec::new();
        put_bytes(&mut opset, 1, domain.as_bytes());
        put_varint_field(&mut opset, 2, 1);
        put_bytes(&mut out, MODEL_OPSET_IMPORT, &opset);
    }
    Some((out, report))
}

// Field numbers from onnx.proto.
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const VALUE_INFO_NAME: u32 = 1;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const ATTRIBUTE_NAME: u32 = 1;
const ATTRIBUTE_INT: u32 = 3;
const ATTRIBUTE_TYPE: u32 = 20;
const ATTRIBUTE_TYPE_INT: u64 = 2;
const TENSOR_FLOAT: u64 = 1;
const TENSOR_UINT8: u64 = 2;
const TENSOR_INT8: u64 = 3;
const TENSOR_INT32: u64 = 6;
const CONTRIB_DOMAIN: &str = "com.microsoft";
/// Values of a row that share one activation scale in an int8 product.
const INT8_BLOCK: usize = int8::BLOCK;
/// `MatMulNBits`' `accuracy_level` that multiplies in int8.
const INT8_COMPUTE: u64 = 4;

/// One field of a protobuf message: its number, payload and the raw bytes including the tag.
struct Field<'a> {
    number: u32,
    wire_type: u8,
    payload: &'a [u8],
    raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The payload of a length-delimited field (a string, bytes or a nested message).
    fn bytes(&self) -> Option<&'a [u8]> {
        (self.wire_type == 2).then_some(self.payload)
    }

    fn string(&self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// The string field `number` of the message in `field` (a tensor's or a value's name).
fn name_field(field: &Field<'_>, number: u32) -> Option<String> {
    fields(field.bytes()?)?
        .iter()
        .find(|f| f.number == number)?
        .string()
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Splits a message into its fields; `None` when the bytes are not well-formed protobuf.
fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = read_varint(buf, &mut pos)?;
        let number = u32::try_from(tag >> 3).ok().filter(|&n| n > 0)?;
        let wire_type = (tag & 7) as u8;
        let payload_start = match wire_type {
            0 => {
                let at = pos;
                read_varint(buf, &mut pos)?;
                at
            }
            1 | 5 => {
                let at = pos;
                pos = pos.checked_add(if wire_type == 1 { 8 } else { 4 })?;
                at
            }
            2 => {
                let len = usize::try_from(read_varint(buf, &mut pos)?).ok()?;
                let at = pos;
                pos = pos.checked_add(len)?;
                at
            }
            _ => return None,
        };
        if pos > buf.len() {
            return None;
        }
        out.push(Field {
            number,
            wire_type,
            payload: &buf[payload_start..pos],
            raw: &buf[start..pos],
        });
    }
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// An integer `AttributeProto`, encoded.
fn int_attribute(name: &str, value: u64) -> Vec<u8> {
    let mut encoded = Vec::new();
    put_bytes(&mut encoded, ATTRIBUTE_NAME, name.as_bytes());
    put_varint_field(&mut encoded, ATTRIBUTE_INT, value);
    put_varint_field(&mut encoded, ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INT);
    encoded
}

/// An initializer whose contents are stored in the model as raw bytes (`raw_data`).
struct Tensor<'a> {
    dims: Vec<u64>,
    data_type: u64,
    raw: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// `None` for tensors stored another way (typed fields, external files).
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut dims = Vec::new();
        let mut data_type = 0;
        let mut raw = None;
        for field in fields(bytes)? {
            let mut pos = 0;
            match (field.number, field.wire_type) {
                (TENSOR_DIMS, 0) => dims.push(read_varint(field.payload, &mut pos)?),
                (TENSOR_DIMS, 2) => {
                    while pos < field.payload.len() {
                        dims.push(read_varint(field.payload, &mut pos)?);
                    }
                }
                (TENSOR_DATA_TYPE, 0) => data_type = read_varint(field.payload, &mut pos)?,
                (TENSOR_RAW_DATA, 2) => raw = Some(field.payload),
                _ => {}
            }
        }
        Some(Tensor {
            dims,
            data_type,
            raw: raw?,
        })
    }

    /// `None` when the dimensions' product overflows (a corrupt model).
    fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Whether the tensor holds exactly `elements()` values of `data_type`, `width` bytes each.
    fn holds(&self, data_type: u64, width: u64) -> bool {
        self.data_type == data_type
            && self
                .elements()
                .and_then(|n| n.checked_mul(width))
                .is_some_and(|bytes| bytes == self.raw.len() as u64)
    }

    /// A `TensorProto` holding `raw`.
    fn encode(name: &str, dims: &[usize], data_type: u64, raw: &[u8]) -> Vec<u8> {
        let mut encoded = Vec::with_capacity(raw.len() + name.len() + 32);
        for &dim in dims {
            put_varint_field(&mut encoded, TENSOR_DIMS, dim as u64);
        }
        put_varint_field(&mut encoded, TENSOR_DATA_TYPE, data_type);
        put_bytes(&mut encoded, TENSOR_NAME, name.as_bytes());
        put_bytes(&mut encoded, TENSOR_RAW_DATA, raw);
        encoded
    }
}

/// A `NodeProto`: the fields the pass reads, plus any others kept encoded.
#[derive(Clone, Default)]
struct Node {
    inputs: Vec<String>,
    outputs: Vec<String>,
    name: String,
    op_type: String,
    domain: String,
    /// Encoded `AttributeProto`s.
    attributes: Vec<Vec<u8>>,
    other_fields: Vec<u8>,
}

impl Node {
    fn new(op_type: &str, name: String, inputs: &[&str], output: &str) -> Self {
        Node {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.to_string()],
            name,
            op_type: op_type.into(),
            ..Default::default()
        }
    }

    fn in_domain(mut self, domain: &str) -> Self {
        self.domain = domain.into();
        self
    }

    fn with(mut self, attribute: Vec<u8>) -> Self {
        self.attributes.push(attribute);
        self
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut node = Node::default();
        for field in fields(bytes)? {
            match field.number {
                NODE_INPUT => node.inputs.push(field.string()?),
                NODE_OUTPUT => node.outputs.push(field.string()?),
                NODE_NAME => node.name = field.string()?,
                NODE_OP_TYPE => node.op_type = field.string()?,
                NODE_DOMAIN => node.domain = field.string()?,
                NODE_ATTRIBUTE => node.attributes.push(field.bytes()?.to_vec()),
                _ => node.other_fields.extend_from_slice(field.raw),
            }
        }
        Some(node)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for input in &self.inputs {
            put_bytes(out, NODE_INPUT, input.as_bytes());
        }
        for output in &self.outputs {
            put_bytes(out, NODE_OUTPUT, output.as_bytes());
        }
        if !self.name.is_empty() {
            put_bytes(out, NODE_NAME, self.name.as_bytes());
        }
        put_bytes(out, NODE_OP_TYPE, self.op_type.as_bytes());
        for attribute in &self.attributes {
            put_bytes(out, NODE_ATTRIBUTE, attribute);
        }
        if !self.domain.is_empty() {
            put_bytes(out, NODE_DOMAIN, self.domain.as_bytes());
        }
        out.extend_from_slice(&self.other_fields);
    }

    /// An op of the default ONNX domain.
    fn is(&self, op_type: &str) -> bool {
        self.op_type == op_type && (self.domain.is_empty() || self.domain == "ai.onnx")
    }
}

/// A `GraphProto`: nodes and the names of initializers, inputs and outputs decoded, every other
/// field kept encoded in its place.
struct Graph<'a> {
    nodes: Vec<Node>,
    /// The encoded fields in order; `None` marks where the nodes go.
    layout: Vec<Option<Field<'a>>>,
    initializers: HashSet<String>,
    /// Encoded `TensorProto`s the rewrite adds.
    new_initializers: Vec<Vec<u8>>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl<'a> Graph<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut graph = Graph {
            nodes: Vec::new(),
            layout: Vec::new(),
            initializers: HashSet::new(),
            new_initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        for field in fields(bytes)? {
            match field.number {
                GRAPH_NODE => {
                    if graph.nodes.is_empty() {
                        graph.layout.push(None);
                    }
                    graph.nodes.push(Node::parse(field.bytes()?)?);
                    continue;
                }
                GRAPH_INITIALIZER => {
                    graph.initializers.insert(name_field(&field, TENSOR_NAME)?);
                }
                GRAPH_INPUT => graph.inputs.push(name_field(&field, VALUE_INFO_NAME)?),
                GRAPH_OUTPUT => graph.outputs.push(name_field(&field, VALUE_INFO_NAME)?),
                _ => {}
            }
            graph.layout.push(Some(field));
        }
        Some(graph)
    }

    /// Encodes the graph; initializers no node reads any more are left out.
    fn encode(&self) -> Vec<u8> {
        let read: HashSet<&str> = self
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .chain(self.outputs.iter().map(String::as_str))
            .collect();
        let mut out = Vec::new();
        for entry in &self.layout {
            match entry {
                None => {
                    let mut node = Vec::new();
                    for n in &self.nodes {
                        node.clear();
                        n.encode(&mut node);
                        put_bytes(&mut out, GRAPH_NODE, &node);
                    }
                }
                Some(field) if field.number == GRAPH_INITIALIZER => {
                    let name = name_field(field, TENSOR_NAME);
                    if name.is_some_and(|name| read.contains(name.as_str())) {
                        out.extend_from_slice(field.raw);
                    }
                }
                Some(field) => out.extend_from_slice(field.raw),
            }
        }
        for tensor in &self.new_initializers {
            put_bytes(&mut out, GRAPH_INITIALIZER, tensor);
        }
        out
    }

    /// The initializers stored as raw bytes, by name.
    fn tensors(&self) -> HashMap<String, Tensor<'a>> {
        self.layout
            .iter()
            .flatten()
            .filter(|field| field.number == GRAPH_INITIALIZER)
            .filter_map(|field| {
                let bytes = field.bytes()?;
                Some((name_field(field, TENSOR_NAME)?, Tensor::parse(bytes)?))
            })
            .collect()
    }

    /// Which node produces each value.
    fn producers(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for output in &node.outputs {
                map.insert(output.clone(), i);
            }
        }
        map
    }

    /// Which nodes read each value.
    fn consumers(&self) -> HashMap<String, Vec<usize>> {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for input in &node.inputs {
                map.entry(input.clone()).or_default().push(i);
            }
        }
        map
    }

    /// Values computed from initializers alone (weights stored quantised and dequantised by
    /// `Cast` and `Mul` count), which ONNX Runtime folds at load.
    fn constants(&self) -> HashSet<String> {
        let mut constant: HashSet<String> = self.initializers.clone();
        for node in &self.nodes {
            if !node.inputs.is_empty() && node.inputs.iter().all(|i| constant.contains(i)) {
                constant.extend(node.outputs.iter().cloned());
            }
        }
        constant
    }

    /// `h + bias` where `bias` is constant: returns `(h, bias)`.
    fn bias_add(&self, node: &Node, constants: &HashSet<String>) -> Option<(String, String)> {
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
    fn fuse_attention(&mut self, heads: usize) -> usize {
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
    fn depends_on_all(
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
    fn fuse_gelu(&mut self) -> usize {
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
    fn int8_matmuls(&mut self, products: Products) -> usize {
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

    /// Adds initializers named after `name` holding a `[K, N]` weight's codes and scales as
    /// `MatMulNBits` reads them; returns their names.
    fn repack_for_matmul_nbits(
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
    fn int8_weight<'t>(
        &self,
        weight: &str,
        producers: &HashMap<String, usize>,
        tensors: &'t HashMap<String, Tensor<'a>>,
    ) -> Option<((&'t String, &'t Tensor<'a>), (&'t String, &'t Tensor<'a>))> {
        let mul = &self.nodes[*producers.get(weight)?];
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
        let (codes, scales) = (
            tensors.get_key_value(codes)?,
            tensors.get_key_value(scales)?,
        );
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

    /// Puts each replacement where the node producing its key (an output) was.
    fn replace_producers(&mut self, mut replacements: HashMap<String, Vec<Node>>) -> usize {
        let count = replacements.len();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in self.nodes.drain(..) {
            match node.outputs.iter().find_map(|o| replacements.remove(o)) {
                Some(fused) => nodes.extend(fused),
                None => nodes.push(node),
            }
        }
        self.nodes = nodes;
        count
    }

    /// Drops nodes whose outputs nothing reads (what the fused nodes made redundant).
    fn remove_dead_nodes(&mut self) {
        let mut live: HashSet<String> = self.outputs.iter().cloned().collect();
        let mut keep = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|o| live.contains(o)) {
                keep[i] = true;
                live.extend(node.inputs.iter().cloned());
            }
        }
        let mut keep = keep.into_iter();
        self.nodes.retain(|_| keep.next().unwrap_or(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_a_model_are_left_alone() {
        for products in [Products::F32, Products::OnnxRuntimeInt8, Products::IsaInt8] {
            assert!(fuse(b"", 12, products).is_none());
            assert!(fuse(b"not protobuf at all \xff\xff\xff\xff", 12, products).is_none());
            // A length prefix running past the end.
            assert!(fuse(&[0x3a, 0x7f, 0x01], 12, products).is_none());
        }
    }

    #[test]
    fn varints_and_fields_round_trip() {
        for value in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, value);
            let mut pos = 0;
            assert_eq!(read_varint(&buf, &mut pos), Some(value));
            assert_eq!(pos, buf.len());
        }
        let mut message = Vec::new();
        put_bytes(&mut message, NODE_OP_TYPE, b"MatMul");
        put_varint_field(&mut message, ATTRIBUTE_TYPE, 2);
        let parsed = fields(&message).expect("well-formed");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].string().as_deref(), Some("MatMul"));
        assert_eq!(
            (parsed[1].number, parsed[1].payload),
            (ATTRIBUTE_TYPE, &[2u8][..])
        );
        let raw: Vec<u8> = parsed.iter().flat_map(|f| f.raw.to_vec()).collect();
        assert_eq!(raw, message);
    }

    #[test]
    fn a_node_survives_decoding_and_encoding() {
        let node = Node::new("Attention", "a".into(), &["x", "w", "b", "m"], "y")
            .in_domain(CONTRIB_DOMAIN)
            .with(int_attribute("num_heads", 12));
        let mut encoded = Vec::new();
        node.encode(&mut encoded);
        let decoded = Node::parse(&encoded).expect("well-formed");
        assert_eq!(decoded.inputs, ["x", "w", "b", "m"]);
        assert_eq!(decoded.outputs, ["y"]);
        assert_eq!(
            (decoded.op_type.as_str(), decoded.domain.as_str()),
            ("Attention", CONTRIB_DOMAIN)
        );
        assert_eq!(decoded.attributes, [int_attribute("num_heads", 12)]);
        let mut again = Vec::new();
        decoded.encode(&mut again);
        assert_eq!(again, encoded);
    }

    /// `y = x · (Cast(q) * s)` with q `[k, 3]` int8 codes and s one scale per column.
    fn int8_weight_graph(k: usize, codes: &[u8], scales: &[f32]) -> Vec<u8> {
        let n = scales.len();
        let mut graph = Vec::new();
        for node in [
            Node::new("Cast", "cast".into(), &["q"], "q_float")
                .with(int_attribute("to", TENSOR_FLOAT)),
            Node::new("Mul", "dequantise".into(), &["q_float", "s"], "w"),
            Node::new("MatMul", "product".into(), &["x", "w"], "y"),
        ] {
            let mut encoded = Vec::new();
            node.encode(&mut encoded);
            put_bytes(&mut graph, GRAPH_NODE, &encoded);
        }
        let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let q = Tensor::encode("q", &[k, n], TENSOR_INT8, codes);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &q);
        let s = Tensor::encode("s", &[1, n], TENSOR_FLOAT, &scale_bytes);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &s);
        for (number, name) in [(GRAPH_INPUT, "x"), (GRAPH_OUTPUT, "y")] {
            let mut value = Vec::new();
            put_bytes(&mut value, VALUE_INFO_NAME, name.as_bytes());
            put_bytes(&mut graph, number, &value);
        }
        graph
    }

    #[test]
    fn a_weight_stored_as_int8_codes_becomes_the_embedders_own_int8_product_over_those_codes() {
        let scales = [0.5f32; 32];
        let bytes = int8_weight_graph(64, &[3; 64 * 32], &scales);
        let mut graph = Graph::parse(&bytes).expect("well-formed");
        assert_eq!(graph.int8_matmuls(Products::IsaInt8), 1);
        graph.remove_dead_nodes();
        let [product] = graph.nodes.as_slice() else {
            panic!("the dequantisation is left in the graph");
        };
        assert_eq!(
            (product.op_type.as_str(), product.domain.as_str()),
            (int8::OPERATOR, int8::DOMAIN)
        );
        assert_eq!(product.inputs, ["x", "q", "s"]);
        assert_eq!(product.outputs, ["y"]);
        assert!(
            graph.new_initializers.is_empty(),
            "the codes are read as stored"
        );
        // The kernel's tiles are 16 columns wide: a weight of 3 stays with `MatMulNBits`' rewrite.
        let bytes = int8_weight_graph(64, &[3; 64 * 3], &scales[..3]);
        let mut graph = Graph::parse(&bytes).expect("well-formed");
        assert_eq!(graph.int8_matmuls(Products::IsaInt8), 0);
        assert_eq!(graph.int8_matmuls(Products::OnnxRuntimeInt8), 1);
    }

    #[test]
    fn a_weight_stored_as_int8_codes_becomes_an_int8_product_over_the_same_codes() {
        let (k, n) = (64, 3);
        let codes: Vec<u8> = (0..k * n).map(|i| ((i * 37) % 255) as u8).collect();
        let scales = [0.5f32, 0.25, 2.0];
        let bytes = int8_weight_graph(k, &codes, &scales);
        let mut graph = Graph::parse(&bytes).expect("well-formed");
        assert_eq!(graph.int8_matmuls(Products::OnnxRuntimeInt8), 1);
        graph.remove_dead_nodes();
        let [product] = graph.nodes.as_slice() else {
            panic!("the dequantisation is left in the graph");
        };
        assert_eq!(
            (product.op_type.as_str(), product.domain.as_str()),
            ("MatMulNBits", CONTRIB_DOMAIN)
        );
        let (codes_name, scales_name) = ("isa_int8_2_codes", "isa_int8_2_scales");
        assert_eq!(product.inputs, ["x", codes_name, scales_name]);
        assert_eq!(product.outputs, ["y"]);
        let attributes = [
            ("K", 64),
            ("N", 3),
            ("bits", 8),
            ("block_size", 32),
            ("accuracy_level", 4),
        ];
        for (name, value) in attributes {
            assert!(
                product.attributes.contains(&int_attribute(name, value)),
                "{name}"
            );
        }

        let encoded = graph.encode();
        let rewritten = Graph::parse(&encoded).expect("well-formed");
        let tensors = rewritten.tensors();
        assert!(
            !tensors.contains_key("q") && !tensors.contains_key("s"),
            "unread weights kept"
        );
        let blocks = &tensors[codes_name];
        assert_eq!(
            (blocks.dims.as_slice(), blocks.data_type),
            (&[3, 2, 32][..], TENSOR_UINT8)
        );
        for row in 0..k {
            for column in 0..n {
                let stored = i32::from(blocks.raw[column * k + row]) - 128;
                assert_eq!(
                    stored,
                    i32::from(codes[row * n + column] as i8),
                    "{row}, {column}"
                );
            }
        }
        let block_scales = &tensors[scales_name];
        assert_eq!(
            (block_scales.dims.as_slice(), block_scales.data_type),
            (&[6][..], TENSOR_FLOAT)
        );
        let values: Vec<f32> = block_scales
            .raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(values, [0.5, 0.5, 0.25, 0.25, 2.0, 2.0]);
    }

    #[test]
    fn a_weight_that_is_not_whole_blocks_of_int8_codes_stays_in_f32() {
        let scales = [1.0f32, 1.0, 1.0];
        // 40 rows: not a whole number of 32-value blocks.
        let rewritten = |bytes: &[u8]| {
            [Products::OnnxRuntimeInt8, Products::IsaInt8].map(|products| {
                Graph::parse(bytes)
                    .expect("well-formed")
                    .int8_matmuls(products)
            })
        };
        assert_eq!(
            rewritten(&int8_weight_graph(40, &[1; 120], &scales)),
            [0, 0]
        );
        // Codes that do not fill the declared shape, and an empty weight.
        assert_eq!(
            rewritten(&int8_weight_graph(64, &[1; 100], &scales)),
            [0, 0]
        );
        assert_eq!(rewritten(&int8_weight_graph(0, &[], &scales)), [0, 0]);
    }
}
