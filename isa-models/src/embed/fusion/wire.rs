//! The protobuf wire format, as far as the rewrite reads and writes ONNX models: fields,
//! varints, and the field numbers of `onnx.proto` it uses.

// Field numbers from onnx.proto.
pub(super) const MODEL_GRAPH: u32 = 7;
pub(super) const MODEL_OPSET_IMPORT: u32 = 8;
pub(super) const GRAPH_NODE: u32 = 1;
pub(super) const GRAPH_INITIALIZER: u32 = 5;
pub(super) const GRAPH_INPUT: u32 = 11;
pub(super) const GRAPH_OUTPUT: u32 = 12;
pub(super) const TENSOR_DIMS: u32 = 1;
pub(super) const TENSOR_DATA_TYPE: u32 = 2;
pub(super) const TENSOR_NAME: u32 = 8;
pub(super) const TENSOR_RAW_DATA: u32 = 9;
pub(super) const VALUE_INFO_NAME: u32 = 1;
pub(super) const NODE_INPUT: u32 = 1;
pub(super) const NODE_OUTPUT: u32 = 2;
pub(super) const NODE_NAME: u32 = 3;
pub(super) const NODE_OP_TYPE: u32 = 4;
pub(super) const NODE_ATTRIBUTE: u32 = 5;
pub(super) const NODE_DOMAIN: u32 = 7;
pub(super) const ATTRIBUTE_NAME: u32 = 1;
pub(super) const ATTRIBUTE_INT: u32 = 3;
pub(super) const ATTRIBUTE_TYPE: u32 = 20;
pub(super) const ATTRIBUTE_TYPE_INT: u64 = 2;
pub(super) const TENSOR_FLOAT: u64 = 1;
pub(super) const TENSOR_UINT8: u64 = 2;
pub(super) const TENSOR_INT8: u64 = 3;
pub(super) const TENSOR_INT32: u64 = 6;

/// One field of a protobuf message: its number, payload and the raw bytes including the tag.
pub(super) struct Field<'a> {
    pub(super) number: u32,
    pub(super) wire_type: u8,
    pub(super) payload: &'a [u8],
    pub(super) raw: &'a [u8],
}

impl<'a> Field<'a> {
    /// The payload of a length-delimited field (a string, bytes or a nested message).
    pub(super) fn bytes(&self) -> Option<&'a [u8]> {
        (self.wire_type == 2).then_some(self.payload)
    }

    pub(super) fn string(&self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// The string field `number` of the message in `field` (a tensor's or a value's name).
pub(super) fn name_field(field: &Field<'_>, number: u32) -> Option<String> {
    fields(field.bytes()?)?
        .iter()
        .find(|f| f.number == number)?
        .string()
}

pub(super) fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
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
pub(super) fn fields(buf: &[u8]) -> Option<Vec<Field<'_>>> {
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

pub(super) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_varint(out, u64::from(number) << 3 | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(super) fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// An integer `AttributeProto`, encoded.
pub(super) fn int_attribute(name: &str, value: u64) -> Vec<u8> {
    let mut encoded = Vec::new();
    put_bytes(&mut encoded, ATTRIBUTE_NAME, name.as_bytes());
    put_varint_field(&mut encoded, ATTRIBUTE_INT, value);
    put_varint_field(&mut encoded, ATTRIBUTE_TYPE, ATTRIBUTE_TYPE_INT);
    encoded
}
