//! A test stream: reads come from a fixed script, writes are collected.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{io::Cursor, AsyncRead, AsyncWrite};

/// Reads `input`, then EOF; everything written lands in `output`.
#[derive(Debug)]
pub(crate) struct ScriptedStream {
    input: Cursor<Vec<u8>>,
    pub(crate) output: Vec<u8>,
}

impl ScriptedStream {
    pub(crate) fn new(input: Vec<u8>) -> Self {
        Self {
            input: Cursor::new(input),
            output: Vec::new(),
        }
    }
}

impl AsyncRead for ScriptedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.input).poll_read(cx, buf)
    }
}

impl AsyncWrite for ScriptedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
