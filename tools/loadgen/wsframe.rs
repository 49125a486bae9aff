//! A minimal client side of RFC 6455 for thousands of non-blocking sockets:
//! the upgrade request and its answer, frame heads, masked client frames.
//!
//! Hand-written instead of tungstenite's `WebSocket` so that a client is a
//! few bytes of state and reading a message is a slice of one shared read
//! buffer: the harness must cost little next to the engine it measures. The
//! tests check it against frames tungstenite writes.

use std::fmt;

/// Frame opcodes.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0;
    /// UTF-8 text.
    pub const TEXT: u8 = 1;
    /// Binary.
    pub const BINARY: u8 = 2;
    /// Close.
    pub const CLOSE: u8 = 8;
    /// Ping.
    pub const PING: u8 = 9;
    /// Pong.
    pub const PONG: u8 = 10;
}

/// Largest frame accepted from a server.
pub const MAX_FRAME: usize = 1 << 20;

/// A parsed frame head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Last frame of its message.
    pub fin: bool,
    /// The opcode.
    pub opcode: u8,
    /// Bytes of head (2, 4 or 10; servers do not mask).
    pub head_len: usize,
    /// Payload bytes.
    pub payload_len: usize,
}

impl Head {
    /// Head plus payload.
    pub fn frame_len(&self) -> usize {
        self.head_len + self.payload_len
    }
}

/// A frame a client must not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set without an extension.
    Reserved,
    /// A server frame with the mask bit.
    Masked,
    /// Opcode 3–7 or 11–15.
    UnknownOpcode(u8),
    /// A control frame over 125 bytes or fragmented.
    BadControl,
    /// Over [`MAX_FRAME`].
    TooLarge(u64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Reserved => f.write_str("frame with reserved bits set"),
            FrameError::Masked => f.write_str("masked frame from the server"),
            FrameError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            FrameError::BadControl => f.write_str("control frame too long or fragmented"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes (limit {MAX_FRAME})"),
        }
    }
}

/// Reads the frame head at the start of `buf`; `Ok(None)` when more bytes
/// are needed for the head (the payload may still be incomplete: compare
/// [`Head::frame_len`] with what is buffered).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, FrameError> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0F;
    let (payload_len, head_len) = match b1 & 0x7F {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(bytes) => (u64::from_be_bytes(*bytes), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    match op {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {
            if !fin || payload_len > 125 {
                return Err(FrameError::BadControl);
            }
        }
        other => return Err(FrameError::UnknownOpcode(other)),
    }
    if payload_len > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge(payload_len));
    }
    Ok(Some(Head {
        fin,
        opcode: op,
        head_len,
        payload_len: payload_len as usize,
    }))
}

/// Appends one masked client frame (FIN set).
pub fn encode_client(op: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | op);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// The upgrade request for `path` on `host` with `key`.
pub fn upgrade_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: dhan-relay-loadgen\r\n\r\n"
    )
}

/// The end of an HTTP head in `buf` (index just past `\r\n\r\n`).
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Checks the server's answer to [`upgrade_request`] with `key`.
pub fn check_upgrade_response(head: &[u8], key: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(format!("upgrade refused: {}", status.trim()));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim().to_string())
    });
    match accept {
        Some(a) if a == expected => Ok(()),
        Some(_) => Err("upgrade answer has a wrong Sec-WebSocket-Accept".into()),
        None => Err("upgrade answer has no Sec-WebSocket-Accept".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Read, Write};
    use tungstenite::protocol::Role;
    use tungstenite::{Message, WebSocket};

    /// A stream that keeps what is written and reads what it was given.
    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn server(input: Vec<u8>) -> WebSocket<Pipe> {
        WebSocket::from_raw_socket(
            Pipe {
                input: Cursor::new(input),
                output: Vec::new(),
            },
            Role::Server,
            None,
        )
    }

    #[test]
    fn reads_frames_tungstenite_writes() {
        let mut ws = server(Vec::new());
        let long = "x".repeat(300);
        let huge = vec![7u8; 70_000];
        ws.send(Message::Text("hello".into())).unwrap();
        ws.send(Message::Text(long.clone().into())).unwrap();
        ws.send(Message::Binary(huge.clone().into())).unwrap();
        ws.send(Message::Ping(vec![1, 2].into())).unwrap();
        let bytes = ws.get_ref().output.clone();
        let mut at = 0;
        let mut got = Vec::new();
        while at < bytes.len() {
            // Every prefix shorter than the head asks for more.
            let h = parse_head(&bytes[at..]).unwrap().unwrap();
            assert_eq!(parse_head(&bytes[at..at + 1]), Ok(None));
            let payload = &bytes[at + h.head_len..at + h.frame_len()];
            got.push((h.fin, h.opcode, payload.to_vec()));
            at += h.frame_len();
        }
        assert_eq!(
            got,
            vec![
                (true, opcode::TEXT, b"hello".to_vec()),
                (true, opcode::TEXT, long.into_bytes()),
                (true, opcode::BINARY, huge),
                (true, opcode::PING, vec![1, 2]),
            ]
        );
    }

    #[test]
    fn tungstenite_reads_what_we_write() {
        let mut out = Vec::new();
        let long = "y".repeat(200);
        encode_client(opcode::TEXT, b"{\"type\":\"ping\"}", [1, 2, 3, 4], &mut out);
        encode_client(opcode::TEXT, long.as_bytes(), [9, 8, 7, 6], &mut out);
        encode_client(opcode::PONG, b"ab", [0, 0, 0, 1], &mut out);
        let mut ws = server(out);
        assert_eq!(
            ws.read().unwrap(),
            Message::Text("{\"type\":\"ping\"}".into())
        );
        assert_eq!(ws.read().unwrap(), Message::Text(long.into()));
        assert_eq!(ws.read().unwrap(), Message::Pong(b"ab".to_vec().into()));
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        assert_eq!(parse_head(&[0x81 | 0x40, 0]), Err(FrameError::Reserved));
        assert_eq!(parse_head(&[0x81, 0x80]), Err(FrameError::Masked));
        assert_eq!(parse_head(&[0x83, 0]), Err(FrameError::UnknownOpcode(3)));
        assert_eq!(parse_head(&[0x09, 0]), Err(FrameError::BadControl));
        assert_eq!(
            parse_head(&[0x89, 126, 0, 200]),
            Err(FrameError::BadControl)
        );
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert!(matches!(parse_head(&big), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn upgrade_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check_upgrade_response(good.as_bytes(), key), Ok(()));
        let bad = good.replace("s3pP", "AAAA");
        assert!(check_upgrade_response(bad.as_bytes(), key).is_err());
        let refused = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert!(check_upgrade_response(refused.as_bytes(), key)
            .unwrap_err()
            .contains("503"));
        assert_eq!(head_end(good.as_bytes()), Some(good.len()));
        assert!(upgrade_request("127.0.0.1:1", "/ws", key).ends_with("\r\n\r\n"));
    }
}
