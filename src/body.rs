//! The body type every layer passes around, in a leaf module so that the error type, the
//! upstream client and the call driver can all use it without importing each other.

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

/// A request or response body: the peer's stream, passed through untouched, or bytes luastrip
/// produced (an error, a rewritten JSON body, a Lua endpoint's answer).
pub type Body = Either<Incoming, Full<Bytes>>;

/// A body made of bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}

/// Why [`read_to_cap`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the body is larger than the limit")]
    TooLarge,
    #[error("{0}")]
    Broken(String),
}

/// Read a whole body, at most `cap` bytes. Callers say what a body over the cap means for them
/// (a 413 for a client's, a 502 for the daemon's).
pub async fn read_to_cap<B>(body: B, cap: usize) -> Result<Bytes, ReadError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, cap).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Broken(e.to_string())),
    }
}

/// A body that counts the bytes it yields and, once it ends or is dropped (the client went
/// away), reports the count: streamed answers in recordings.
pub struct Counted<B> {
    inner: B,
    bytes: u64,
    on_end: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, on_end: impl FnOnce(u64) + Send + Sync + 'static) -> Self {
        Counted {
            inner,
            bytes: 0,
            on_end: Some(Box::new(on_end)),
        }
    }

    fn end(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.bytes);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<B> hyper::body::Body for Counted<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            std::task::Poll::Ready(None) => self.end(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
