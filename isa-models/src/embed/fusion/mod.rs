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
//! Apart from these, [`dequantise_after_lookups`] rewrites a row lookup (`Gather`) in a table
//! stored as int8 codes and dequantised in the graph into a lookup in the codes, dequantised
//! after it: the same values, but ONNX Runtime no longer folds the whole table into f32 at load
//! (all-MiniLM-L6-v2's word embeddings: 11 MiB of codes became 45 MiB of floats).
//!
//! The embedder's own products also take in the `Add`s after them: the bias, then the residual
//! (the layer's input) before each layer norm, added as the product writes its tiles, which
//! saves two passes over the activations and two kernel launches per product
//! ([`graph::Graph::fold_adds_into_int8_products`]).
//!
//! Layer norms stay as they are, and ONNX Runtime's own fusion of them into
//! `SkipLayerNormalization` is turned off for the rewritten model ([`DISABLED_OPTIMIZERS`]): on a
//! short query that operator was measured slower than the two `Add`s and the
//! `LayerNormalization` it replaces (figures in `benches/README.md`).
//!
//! Only the protobuf fields the pass needs are decoded; everything else is copied byte for byte.
//! It matches shapes of the graph, not the constants inside it, so the embedder runs the result
//! against the original model on a probe batch before using it (see `super::choose_model`).

use super::int8;

mod graph;
mod rewrites;
mod wire;

use graph::Graph;
use rewrites::CONTRIB_DOMAIN;
use wire::*;

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
    /// `Add`s of a bias or a residual after the embedder's own int8 products, now done by the
    /// products as they write their results.
    pub folded_adds: usize,
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
        if products == Products::IsaInt8 {
            report.folded_adds = graph.fold_adds_into_int8_products();
        }
    }
    report.nodes_after = graph.nodes.len();
    let mut domains = vec![CONTRIB_DOMAIN];
    if products == Products::IsaInt8 {
        domains.push(int8::DOMAIN);
    }
    Some((encode(model, &model_fields, &graph, domains)?, report))
}

/// The model with each row lookup in a table stored as int8 codes done in the codes and
/// dequantised after it (see the module's notes), and how many lookups that was; `None` when
/// there are none. The same values as the model as written.
pub fn dequantise_after_lookups(model: &[u8]) -> Option<(Vec<u8>, usize)> {
    let model_fields = fields(model)?;
    let graph_field = model_fields.iter().find(|f| f.number == MODEL_GRAPH)?;
    let mut graph = Graph::parse(graph_field.bytes()?)?;
    let lookups = graph.int8_lookups();
    if lookups == 0 {
        return None;
    }
    graph.remove_dead_nodes();
    Some((encode(model, &model_fields, &graph, Vec::new())?, lookups))
}

/// `model` with `graph` in place of its graph, importing `domains` where it does not already.
fn encode(
    model: &[u8],
    model_fields: &[Field<'_>],
    graph: &Graph<'_>,
    mut missing_domains: Vec<&str>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(model.len() + 4096);
    for field in model_fields {
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
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{graph::*, rewrites::*, *};

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
        int8_weight_graph_then(k, codes, scales, &[], &["y"])
    }

    /// [`int8_weight_graph`] with `later` nodes after the product, a bias `b` of N floats and
    /// an input `r`, and `outputs` for the graph's.
    fn int8_weight_graph_then(
        k: usize,
        codes: &[u8],
        scales: &[f32],
        later: &[Node],
        outputs: &[&str],
    ) -> Vec<u8> {
        let n = scales.len();
        let mut graph = Vec::new();
        let product = [
            Node::new("Cast", "cast".into(), &["q"], "q_float")
                .with(int_attribute("to", TENSOR_FLOAT)),
            Node::new("Mul", "dequantise".into(), &["q_float", "s"], "w"),
            Node::new("MatMul", "product".into(), &["x", "w"], "y"),
        ];
        for node in product.iter().chain(later) {
            let mut encoded = Vec::new();
            node.encode(&mut encoded);
            put_bytes(&mut graph, GRAPH_NODE, &encoded);
        }
        let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let q = Tensor::encode("q", &[k, n], TENSOR_INT8, codes);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &q);
        let s = Tensor::encode("s", &[1, n], TENSOR_FLOAT, &scale_bytes);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &s);
        let b = Tensor::encode("b", &[n], TENSOR_FLOAT, &scale_bytes);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &b);
        let values = [(GRAPH_INPUT, "x"), (GRAPH_INPUT, "r")]
            .into_iter()
            .chain(outputs.iter().map(|&o| (GRAPH_OUTPUT, o)));
        for (number, name) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, VALUE_INFO_NAME, name.as_bytes());
            put_bytes(&mut graph, number, &value);
        }
        graph
    }

    /// `y = Gather(Cast(q) * s, ids)` on `axis`, with q `[4, 2]` int8 codes and s of `scale_dims`.
    fn int8_lookup_graph(axis: u64, scale_dims: &[usize]) -> Vec<u8> {
        let mut graph = Vec::new();
        for node in [
            Node::new("Cast", "cast".into(), &["q"], "q_float")
                .with(int_attribute("to", TENSOR_FLOAT)),
            Node::new("Mul", "dequantise".into(), &["q_float", "s"], "table"),
            Node::new("Gather", "lookup".into(), &["table", "ids"], "y")
                .with(int_attribute("axis", axis)),
        ] {
            let mut encoded = Vec::new();
            node.encode(&mut encoded);
            put_bytes(&mut graph, GRAPH_NODE, &encoded);
        }
        let scales: Vec<u8> = (0..scale_dims.iter().product::<usize>())
            .flat_map(|i| (i as f32 + 1.0).to_le_bytes())
            .collect();
        put_bytes(
            &mut graph,
            GRAPH_INITIALIZER,
            &Tensor::encode("q", &[4, 2], TENSOR_INT8, &[1, 2, 3, 4, 5, 6, 7, 8]),
        );
        put_bytes(
            &mut graph,
            GRAPH_INITIALIZER,
            &Tensor::encode("s", scale_dims, TENSOR_FLOAT, &scales),
        );
        for (number, name) in [(GRAPH_INPUT, "ids"), (GRAPH_OUTPUT, "y")] {
            let mut value = Vec::new();
            put_bytes(&mut value, VALUE_INFO_NAME, name.as_bytes());
            put_bytes(&mut graph, number, &value);
        }
        graph
    }

    /// The lookups rewritten in `int8_lookup_graph(axis, scale_dims)`, and the nodes left.
    fn rewrite_lookups(axis: u64, scale_dims: &[usize]) -> (usize, Vec<Node>) {
        let bytes = int8_lookup_graph(axis, scale_dims);
        let mut graph = Graph::parse(&bytes).expect("well-formed");
        let rewritten = graph.int8_lookups();
        graph.remove_dead_nodes();
        (rewritten, graph.nodes)
    }

    /// Each node's operator and inputs.
    fn operators(nodes: &[Node]) -> Vec<(&str, Vec<&str>)> {
        nodes
            .iter()
            .map(|n| {
                (
                    n.op_type.as_str(),
                    n.inputs.iter().map(String::as_str).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_lookup_in_an_int8_table_reads_the_codes_and_dequantises_the_rows_it_found() {
        // One scale per row: the scales are looked up with the codes.
        let (rewritten, nodes) = rewrite_lookups(0, &[4, 1]);
        assert_eq!(rewritten, 1);
        assert_eq!(
            operators(&nodes),
            [
                ("Gather", vec!["q", "ids"]),
                ("Cast", vec!["y_codes"]),
                ("Gather", vec!["s", "ids"]),
                ("Mul", vec!["y_values", "y_scales"]),
            ]
        );
        assert_eq!(nodes[3].outputs, ["y"]);
        assert_eq!(nodes[0].attributes, [int_attribute("axis", 0)]);
        assert_eq!(nodes[1].attributes, [int_attribute("to", TENSOR_FLOAT)]);
        // One scale per column: every row found is multiplied by all of them.
        let (rewritten, nodes) = rewrite_lookups(0, &[1, 2]);
        assert_eq!(rewritten, 1);
        assert_eq!(
            operators(&nodes),
            [
                ("Gather", vec!["q", "ids"]),
                ("Cast", vec!["y_codes"]),
                ("Mul", vec!["y_values", "s"]),
            ]
        );
        // Columns looked up, and scales that are neither per row nor per column, stay as written.
        for (axis, scale_dims) in [(1, &[4usize, 1][..]), (0, &[4, 2])] {
            let (rewritten, nodes) = rewrite_lookups(axis, scale_dims);
            assert_eq!(rewritten, 0, "axis {axis}, scales {scale_dims:?}");
            assert_eq!(nodes.len(), 3);
        }
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
    fn the_bias_and_residual_adds_after_an_int8_product_are_folded_into_it() {
        let scales = [0.5f32; 16];
        let codes = [3u8; 64 * 16];
        let fold = |later: &[Node], outputs: &[&str]| {
            let bytes = int8_weight_graph_then(64, &codes, &scales, later, outputs);
            let mut graph = Graph::parse(&bytes).expect("well-formed");
            assert_eq!(graph.int8_matmuls(Products::IsaInt8), 1);
            graph.remove_dead_nodes();
            let folded = graph.fold_adds_into_int8_products();
            (folded, graph.nodes)
        };
        let bias = Node::new("Add", "bias".into(), &["y", "b"], "yb");
        let residual = Node::new("Add", "residual".into(), &["r", "yb"], "z");
        let norm = Node::new("LayerNormalization", "norm".into(), &["z"], "out");

        let (folded, nodes) = fold(&[bias.clone(), residual.clone(), norm.clone()], &["out"]);
        assert_eq!(folded, 2);
        assert_eq!(
            operators(&nodes),
            [
                (int8::OPERATOR, vec!["x", "q", "s", "b", "r"]),
                ("LayerNormalization", vec!["z"]),
            ]
        );
        assert_eq!(nodes[0].outputs, ["z"]);

        // A bias alone; a residual alone (no bias: an empty name in its place).
        let (_, nodes) = fold(std::slice::from_ref(&bias), &["yb"]);
        assert_eq!(
            operators(&nodes),
            [(int8::OPERATOR, vec!["x", "q", "s", "b"])]
        );
        assert_eq!(nodes[0].outputs, ["yb"]);
        let residual_of_y = Node::new("Add", "residual".into(), &["y", "r"], "z");
        let (_, nodes) = fold(&[residual_of_y], &["z"]);
        assert_eq!(
            operators(&nodes),
            [(int8::OPERATOR, vec!["x", "q", "s", "", "r"])]
        );

        // A sum something else reads too, or that the graph outputs, stays an Add of its own.
        let also = Node::new("Relu", "also".into(), &["yb"], "other");
        let (_, nodes) = fold(&[bias.clone(), residual.clone(), also], &["z", "other"]);
        assert_eq!(
            operators(&nodes)[0],
            (int8::OPERATOR, vec!["x", "q", "s", "b"])
        );
        assert_eq!(nodes.iter().filter(|n| n.is("Add")).count(), 1);
        let (folded, nodes) = fold(&[bias.clone(), residual], &["yb", "z"]);
        assert_eq!(folded, 1);
        assert_eq!(
            nodes[0].outputs,
            ["yb"],
            "the bias is folded, the residual is not"
        );
        // An Add of a constant that is not N floats is no bias.
        let codes_add = Node::new("Add", "bias".into(), &["y", "q"], "yb");
        let (folded, _) = fold(&[codes_add], &["yb"]);
        assert_eq!(folded, 0);
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
