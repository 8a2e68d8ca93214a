//! A WebSocket driven frame by frame: for sending what no library would send (illegal frames,
//! odd fragmentations, floods) and reading exactly what the server answers.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::frame::{self, Frame};
use crate::{handshake, Error, ServerAddr, READ_TIMEOUT};

/// The mask of every frame this client sends.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A connection upgraded by hand.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects and upgrades to `path`.
    pub fn connect(server: &impl ServerAddr, path: &str) -> Result<RawClient, Error> {
        Ok(Self::connect_with_headers(server, path, "")?.0)
    }

    /// Connects with extra request header lines (each ending in CRLF); also returns the 101's head.
    pub fn connect_with_headers(server: &impl ServerAddr, path: &str, headers: &str) -> Result<(RawClient, String), Error> {
        let stream = TcpStream::connect(server.server_addr())?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        Self::upgrade_with(stream, path, headers)
    }

    /// Upgrades an open connection.
    pub fn upgrade(stream: TcpStream, path: &str) -> Result<RawClient, Error> {
        Ok(Self::upgrade_with(stream, path, "")?.0)
    }

    fn upgrade_with(mut stream: TcpStream, path: &str, headers: &str) -> Result<(RawClient, String), Error> {
        let host = stream.peer_addr()?.to_string();
        stream.write_all(handshake::request(path, &host, headers).as_bytes())?;
        let mut buf = Vec::new();
        let head_len = loop {
            if let Some(answer) = handshake::read_answer(&buf) {
                break answer?;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk)? {
                0 => return Err(Error::Protocol(format!("closed during the handshake after {:?}", String::from_utf8_lossy(&buf)))),
                n => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        buf.drain(..head_len);
        Ok((RawClient { stream, buf }, head))
    }

    /// A client frame with first byte `first` (FIN, RSV, opcode); `masked` false makes it illegal.
    pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        frame::encode(first, payload, masked.then_some(MASK))
    }

    /// Sends one masked frame.
    pub fn send(&mut self, first: u8, payload: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(&Self::frame(first, payload, true))
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one server frame: (first byte, payload). `Ok(None)` at the end of the stream (or a
    /// reset). A masked frame from the server is a protocol error.
    pub fn read_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, Error> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads one server frame if a whole one is already there or arrives without blocking (set
    /// the stream non-blocking first); `Ok(None)` otherwise.
    pub fn try_read_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, Error> {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        self.take_frame()
    }

    fn take_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, Error> {
        let Some(frame) = Frame::parse(&self.buf) else { return Ok(None) };
        if frame.masked {
            return Err(Error::Protocol("a masked frame from the server".into()));
        }
        let taken = (frame.first, self.buf[frame.payload.clone()].to_vec());
        self.buf.drain(..frame.payload.end);
        Ok(Some(taken))
    }

    /// Reads frames until a close frame, skipping pings; returns its status code (1005 for none).
    pub fn expect_close(&mut self) -> Result<u16, Error> {
        loop {
            let Some((first, payload)) = self.read_frame()? else {
                return Err(Error::Closed { code: None, waiting_for: "a close frame".into(), seen: Vec::new() });
            };
            match first & 0x0f {
                0x9 => continue,
                0x8 if first == 0x88 => return Ok(frame::close_code(&payload)),
                _ => return Err(Error::Protocol(format!("expected a close frame, got {first:#x} ({} bytes)", payload.len()))),
            }
        }
    }

    /// After a close: the server must end the TCP connection (pings before that are skipped).
    pub fn expect_eof(&mut self) -> Result<(), Error> {
        while let Some((first, _)) = self.read_frame()? {
            if first & 0x0f != 0x9 {
                return Err(Error::Protocol(format!("a frame after the close: {first:#x}")));
            }
        }
        Ok(())
    }
}
