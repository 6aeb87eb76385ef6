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
