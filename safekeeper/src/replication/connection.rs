//! A client connection: a buffered, size-limited message reader and a message writer.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::limits::{MAX_FRONTEND_MESSAGE_BYTES, WRITE_TIMEOUT};
use super::messages::{
    decode_message, decode_startup, BackendWriter, FrontendMessage, ProtocolError, StartupPacket,
};

/// How much the read buffer asks the socket for at a time.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Why reading the next message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading from the client: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("the client closed the connection in the middle of a message")]
    UnexpectedEof,
}

/// Why writing to the client failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("writing to the client: {0}")]
    Io(#[from] io::Error),
    #[error("the client did not read for {0:?}")]
    Timeout(std::time::Duration),
}

/// The two halves of a client connection, with the buffers between them and the codec.
#[derive(Debug)]
pub struct Connection<R, W> {
    reader: R,
    writer: W,
    input: BytesMut,
    /// Backend messages queued until the next [`Connection::flush`].
    pub out: BackendWriter,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub fn new(reader: R, writer: W) -> Self {
        Connection {
            reader,
            writer,
            input: BytesMut::with_capacity(READ_CHUNK_BYTES),
            out: BackendWriter::new(),
        }
    }

    /// The next startup packet; `None` if the client closed the connection first.
    pub async fn read_startup(&mut self) -> Result<Option<StartupPacket>, ReadError> {
        loop {
            if let Some(packet) = decode_startup(&mut self.input)? {
                return Ok(Some(packet));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// The next regular message; `None` if the client closed the connection between
    /// messages. Cancel-safe: a partly received message stays buffered, so this can be a
    /// branch of `select!`.
    pub async fn read_message(&mut self) -> Result<Option<FrontendMessage>, ReadError> {
        loop {
            if let Some(message) = decode_message(&mut self.input)? {
                return Ok(Some(message));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// Read more bytes; `false` at a clean end of stream. The decoders ask for more only
    /// while the buffer holds less than one message whose length was checked, so the buffer
    /// never grows beyond the message limit plus one read.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        debug_assert!(self.input.len() <= MAX_FRONTEND_MESSAGE_BYTES + READ_CHUNK_BYTES);
        self.input.reserve(READ_CHUNK_BYTES);
        let read = self.reader.read_buf(&mut self.input).await?;
        if read > 0 {
            return Ok(true);
        }
        if self.input.is_empty() {
            Ok(false)
        } else {
            Err(ReadError::UnexpectedEof)
        }
    }

    /// Send everything queued in [`Connection::out`], waiting at most [`WRITE_TIMEOUT`].
    pub async fn flush(&mut self) -> Result<(), WriteError> {
        let pending = self.out.buf.split().freeze();
        let write = async {
            self.writer.write_all(&pending).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(WriteError::Timeout(WRITE_TIMEOUT)),
        }
    }

    /// Bytes queued but not yet flushed.
    pub fn pending_output(&self) -> usize {
        self.out.buf.len()
    }

    /// Close the writing side after flushing (best effort).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.writer.shutdown().await;
    }
}
