//! A graph model over an encoded `GraphProto`: the nodes decoded, every other field kept
//! encoded in its place, and what the rewrites ask of it (producers, consumers, constants).

use std::collections::{HashMap, HashSet};

use super::wire::*;

/// An initializer whose contents are stored in the model as raw bytes (`raw_data`).
pub(super) struct Tensor<'a> {
    pub(super) dims: Vec<u64>,
    pub(super) data_type: u64,
    pub(super) raw: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// `None` for tensors stored another way (typed fields, external files).
    pub(super) fn parse(bytes: &'a [u8]) -> Option<Self> {
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
    pub(super) fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Whether the tensor holds exactly `elements()` values of `data_type`, `width` bytes each.
    pub(super) fn holds(&self, data_type: u64, width: u64) -> bool {
        self.data_type == data_type
            && self
                .elements()
                .and_then(|n| n.checked_mul(width))
                .is_some_and(|bytes| bytes == self.raw.len() as u64)
    }

    /// A `TensorProto` holding `raw`.
    pub(super) fn encode(name: &str, dims: &[usize], data_type: u64, raw: &[u8]) -> Vec<u8> {
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
pub(super) struct Node {
    pub(super) inputs: Vec<String>,
    pub(super) outputs: Vec<String>,
    pub(super) name: String,
    pub(super) op_type: String,
    pub(super) domain: String,
    /// Encoded `AttributeProto`s.
    pub(super) attributes: Vec<Vec<u8>>,
    pub(super) other_fields: Vec<u8>,
}

impl Node {
    pub(super) fn new(op_type: &str, name: String, inputs: &[&str], output: &str) -> Self {
        Node {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.to_string()],
            name,
            op_type: op_type.into(),
            ..Default::default()
        }
    }

    pub(super) fn in_domain(mut self, domain: &str) -> Self {
        self.domain = domain.into();
        self
    }

    pub(super) fn with(mut self, attribute: Vec<u8>) -> Self {
        self.attributes.push(attribute);
        self
    }

    pub(super) fn parse(bytes: &[u8]) -> Option<Self> {
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

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
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
    pub(super) fn is(&self, op_type: &str) -> bool {
        self.op_type == op_type && (self.domain.is_empty() || self.domain == "ai.onnx")
    }
}

/// A `GraphProto`: nodes and the names of initializers, inputs and outputs decoded, every other
/// field kept encoded in its place.
pub(super) struct Graph<'a> {
    pub(super) nodes: Vec<Node>,
    /// The encoded fields in order; `None` marks where the nodes go.
    pub(super) layout: Vec<Option<Field<'a>>>,
    pub(super) initializers: HashSet<String>,
    /// Encoded `TensorProto`s the rewrite adds.
    pub(super) new_initializers: Vec<Vec<u8>>,
    pub(super) inputs: Vec<String>,
    pub(super) outputs: Vec<String>,
}

impl<'a> Graph<'a> {
    pub(super) fn parse(bytes: &'a [u8]) -> Option<Self> {
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
    pub(super) fn encode(&self) -> Vec<u8> {
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
    pub(super) fn tensors(&self) -> HashMap<String, Tensor<'a>> {
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
    pub(super) fn producers(&self) -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for output in &node.outputs {
                map.insert(output.clone(), i);
            }
        }
        map
    }

    /// Which nodes read each value.
    pub(super) fn consumers(&self) -> HashMap<String, Vec<usize>> {
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
    pub(super) fn constants(&self) -> HashSet<String> {
        let mut constant: HashSet<String> = self.initializers.clone();
        for node in &self.nodes {
            if !node.inputs.is_empty() && node.inputs.iter().all(|i| constant.contains(i)) {
                constant.extend(node.outputs.iter().cloned());
            }
        }
        constant
    }

    /// Puts each replacement where the node producing its key (an output) was.
    pub(super) fn replace_producers(
        &mut self,
        mut replacements: HashMap<String, Vec<Node>>,
    ) -> usize {
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
    pub(super) fn remove_dead_nodes(&mut self) {
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
