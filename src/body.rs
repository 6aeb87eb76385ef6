//! The body type every layer passes around, in a leaf module so that the error type, the
//! upstream client and the call driver can all use it without importing each other.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// A request or response body: the peer's stream, passed through untouched, or bytes luastrip
/// produced (an error, a rewritten JSON body, a Lua endpoint's answer).
pub type Body = Either<Incoming, Full<Bytes>>;

/// A body made of bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Right(Full::new(bytes.into()))
}
