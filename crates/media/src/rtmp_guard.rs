//! Checks every RTMP message a client sends before `rml_rtmp` decodes it.
//!
//! `rml_rtmp` decodes AMF0 recursively and trusts the shape of commands, so a
//! hostile client could overflow a worker's stack with deeply nested objects
//! or make it panic with a short command. [`MessageGuard`] reassembles the
//! same chunk stream on its own (with the same chunk size changes, in the same
//! order), and walks each AMF message iteratively with a depth limit, a size
//! limit and the value counts the decoder relies on. Only bytes whose every
//! complete message passed are handed to the session. No I/O, no allocation
//! beyond the chunk reassembly itself.

use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::{MessagePayload, RtmpMessage};

/// Deepest AMF0 nesting accepted (objects, ECMA arrays and strict arrays).
/// Real encoders send at most 2 or 3 levels (`onMetaData`'s object).
pub const MAX_AMF_DEPTH: usize = 32;

/// Largest AMF0 command or data message accepted, in bytes.
pub const MAX_AMF_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a client's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The chunk stream itself is malformed.
    #[error("malformed chunk stream: {0}")]
    Chunk(String),
    /// AMF values nested deeper than [`MAX_AMF_DEPTH`].
    #[error("AMF0 nested deeper than {MAX_AMF_DEPTH} levels")]
    TooDeep,
    /// An AMF message larger than [`MAX_AMF_MESSAGE_BYTES`].
    #[error("AMF0 message of {0} bytes is over the limit of {MAX_AMF_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// A command without its name, transaction id and command object.
    #[error("AMF0 command with {0} values (3 or more required)")]
    ShortCommand(usize),
    /// `@setDataFrame` without its name and value.
    #[error("@setDataFrame with {0} values (3 or more required)")]
    ShortDataFrame(usize),
    /// Bytes that are not AMF0 (unknown marker, truncated value).
    #[error("malformed AMF0: {0}")]
    Amf(&'static str),
}

/// Follows a client's chunk stream and checks each message as it completes.
pub struct MessageGuard {
    chunks: ChunkDeserializer,
}

impl Default for MessageGuard {
    fn default() -> Self {
        MessageGuard::new()
    }
}

impl MessageGuard {
    /// A guard for a new connection (after the handshake).
    pub fn new() -> Self {
        MessageGuard {
            chunks: ChunkDeserializer::new(),
        }
    }

    /// Takes the next bytes of the stream; `Ok` when every message they
    /// complete may be decoded. After an error the connection must close.
    pub fn inspect(&mut self, bytes: &[u8]) -> Result<(), GuardError> {
        let mut input = bytes;
        loop {
            let next = self
                .chunks
                .get_next_message(input)
                .map_err(|err| GuardError::Chunk(err.to_string()))?;
            input = &[];
            let Some(payload) = next else {
                return Ok(());
            };
            self.check(&payload)?;
        }
    }

    fn check(&mut self, payload: &MessagePayload) -> Result<(), GuardError> {
        match payload.type_id {
            1 => {
                // Set Chunk Size: follow it, exactly as the session will.
                let message = payload
                    .to_rtmp_message()
                    .map_err(|err| GuardError::Chunk(err.to_string()))?;
                if let RtmpMessage::SetChunkSize { size } = message {
                    self.chunks
                        .set_max_chunk_size(size as usize)
                        .map_err(|err| GuardError::Chunk(err.to_string()))?;
                }
                Ok(())
            }
            // AMF0 data (15 is "AMF3" data that is AMF0 in practice).
            15 | 18 => check_data_message(&payload.data),
            20 => check_command(&payload.data),
            // AMF3 commands carry AMF0 after a leading zero byte.
            17 => match payload.data.first() {
                Some(0) => check_command(&payload.data[1..]),
                _ => check_command(&payload.data),
            },
            _ => Ok(()),
        }
    }
}

/// A command needs its name, transaction id and command object.
fn check_command(bytes: &[u8]) -> Result<(), GuardError> {
    let shape = scan_values(bytes)?;
    if shape.count < 3 {
        return Err(GuardError::ShortCommand(shape.count));
    }
    Ok(())
}

/// `@setDataFrame` needs its name (`onMetaData`) and the value after it.
fn check_data_message(bytes: &[u8]) -> Result<(), GuardError> {
    let shape = scan_values(bytes)?;
    if shape.first_is_set_data_frame && shape.count < 3 {
        return Err(GuardError::ShortDataFrame(shape.count));
    }
    Ok(())
}

/// What the decoder will see at the top level of a message.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    /// Top-level values, counted as `rml_amf0::deserialize` counts them
    /// (until the end of the bytes or a top-level object-end marker).
    count: usize,
    first_is_set_data_frame: bool,
}

/// One open container while scanning.
enum Open {
    /// An object or ECMA array: (name, value) pairs until an empty name and 0x09.
    Object,
    /// A strict array with this many values left.
    Array(u32),
}

/// Walks AMF0 values without recursion, with the depth bounded.
fn scan_values(bytes: &[u8]) -> Result<Shape, GuardError> {
    if bytes.len() > MAX_AMF_MESSAGE_BYTES {
        return Err(GuardError::TooLarge(bytes.len()));
    }
    let mut reader = Reader { bytes, at: 0 };
    let mut stack: Vec<Open> = Vec::new();
    let mut shape = Shape {
        count: 0,
        first_is_set_data_frame: false,
    };
    loop {
        // Decide whether a value comes next, and close finished containers.
        match stack.last_mut() {
            None => {
                match reader.peek() {
                    None | Some(0x09) => return Ok(shape),
                    Some(_) => {}
                }
                shape.count += 1;
            }
            Some(Open::Object) => {
                let name_len = reader.u16()? as usize;
                if name_len == 0 {
                    if reader.u8()? != 0x09 {
                        return Err(GuardError::Amf("object property with an empty name"));
                    }
                    stack.pop();
                    continue;
                }
                reader.skip(name_len)?;
                if matches!(reader.peek(), None | Some(0x09)) {
                    return Err(GuardError::Amf("object property without a value"));
                }
            }
            Some(Open::Array(left)) => {
                if *left == 0 || matches!(reader.peek(), None | Some(0x09)) {
                    // The decoder stops an array early at its end or at 0x09.
                    if *left != 0 && reader.peek() == Some(0x09) {
                        reader.skip(1)?;
                    }
                    stack.pop();
                    continue;
                }
                *left -= 1;
            }
        }
        let top_level_first = stack.is_empty() && shape.count == 1;
        let marker = reader.u8()?;
        match marker {
            0x00 => reader.skip(8)?,
            0x01 => reader.skip(1)?,
            0x02 => {
                let len = reader.u16()? as usize;
                let text = reader.take(len)?;
                if top_level_first && text == b"@setDataFrame" {
                    shape.first_is_set_data_frame = true;
                }
            }
            0x05 | 0x06 => {}
            0x03 | 0x08 | 0x0A => {
                if stack.len() >= MAX_AMF_DEPTH {
                    return Err(GuardError::TooDeep);
                }
                match marker {
                    0x03 => stack.push(Open::Object),
                    0x08 => {
                        reader.skip(4)?;
                        stack.push(Open::Object);
                    }
                    _ => {
                        let count = reader.u32()?;
                        stack.push(Open::Array(count));
                    }
                }
            }
            _ => return Err(GuardError::Amf("unknown marker")),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], GuardError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(GuardError::Amf("truncated value"))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn skip(&mut self, len: usize) -> Result<(), GuardError> {
        self.take(len).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, GuardError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, GuardError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, GuardError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// An AMF0 string value.
#[cfg(test)]
pub(crate) fn amf_string(text: &str) -> Vec<u8> {
    let mut out = vec![0x02];
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out
}

/// An AMF0 number value.
#[cfg(test)]
pub(crate) fn amf_number(value: f64) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend_from_slice(&value.to_be_bytes());
    out
}

/// `connect`, 1, then an object nested `depth` deep (`03 00 01 61` repeated).
#[cfg(test)]
pub(crate) fn nested_connect(depth: usize) -> Vec<u8> {
    let mut out = amf_string("connect");
    out.extend(amf_number(1.0));
    for _ in 0..depth {
        out.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    out.push(0x05);
    for _ in 0..depth {
        out.extend_from_slice(&[0x00, 0x00, 0x09]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_amf0::Amf0Value;
    use std::collections::HashMap;

    #[test]
    fn real_commands_pass() {
        let mut properties = HashMap::new();
        properties.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        properties.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String("rtmp://x".into()),
        );
        let values = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(properties),
            Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::Boolean(true)]),
        ];
        let bytes = rml_amf0::serialize(&values).unwrap();
        assert_eq!(check_command(&bytes), Ok(()));
        assert_eq!(scan_values(&bytes).unwrap().count, 4);
    }

    #[test]
    fn nesting_is_bounded_before_decoding() {
        assert_eq!(check_command(&nested_connect(MAX_AMF_DEPTH)), Ok(()));
        assert_eq!(
            check_command(&nested_connect(MAX_AMF_DEPTH + 1)),
            Err(GuardError::TooDeep)
        );
        // The reported attack: about 4,000 levels in 16 KB.
        assert_eq!(
            check_command(&nested_connect(4000)),
            Err(GuardError::TooDeep)
        );
        // Strict arrays nest too.
        let mut arrays = amf_string("connect");
        arrays.extend(amf_number(1.0));
        for _ in 0..100 {
            arrays.extend_from_slice(&[0x0A, 0, 0, 0, 1]);
        }
        arrays.push(0x05);
        assert_eq!(check_command(&arrays), Err(GuardError::TooDeep));
    }

    #[test]
    fn short_commands_and_data_frames_are_refused() {
        let mut two = amf_string("connect");
        two.extend(amf_number(1.0));
        assert_eq!(check_command(&two), Err(GuardError::ShortCommand(2)));
        assert_eq!(check_command(&[]), Err(GuardError::ShortCommand(0)));
        let mut frame = amf_string("@setDataFrame");
        frame.extend(amf_string("onMetaData"));
        assert_eq!(
            check_data_message(&frame),
            Err(GuardError::ShortDataFrame(2))
        );
        frame.push(0x05);
        assert_eq!(check_data_message(&frame), Ok(()));
        // Other data messages may be short.
        assert_eq!(check_data_message(&amf_string("|RtmpSampleAccess")), Ok(()));
    }

    #[test]
    fn malformed_amf_is_refused() {
        assert!(check_command(&[0x02, 0x00, 0x10, b'a']).is_err());
        assert!(check_command(&[0x11]).is_err());
        let big = vec![0x05; MAX_AMF_MESSAGE_BYTES + 1];
        assert_eq!(
            check_command(&big),
            Err(GuardError::TooLarge(MAX_AMF_MESSAGE_BYTES + 1))
        );
    }

    #[test]
    fn counts_agree_with_the_decoder() {
        // Whatever the guard accepts, rml_amf0 decodes to the same number of values.
        let cases: Vec<Vec<u8>> = vec![
            nested_connect(3),
            [amf_string("a"), vec![0x09], amf_string("b")].concat(),
            [
                amf_string("a"),
                vec![0x0A, 0, 0, 0, 5, 0x05, 0x09],
                amf_number(2.0),
            ]
            .concat(),
            [
                amf_string("a"),
                vec![0x08, 0, 0, 0, 1, 0, 1, b'k', 0x05, 0, 0, 0x09],
            ]
            .concat(),
        ];
        for bytes in cases {
            let shape = scan_values(&bytes).unwrap();
            let decoded = rml_amf0::deserialize(&mut std::io::Cursor::new(&bytes)).unwrap();
            assert_eq!(shape.count, decoded.len(), "{bytes:?}");
        }
    }
}
