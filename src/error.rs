//! One error type for everything the gateway itself can get wrong.
//!
//! Docker clients only understand one error shape: a status code and a JSON body
//! `{"message": "..."}`, which the docker CLI prints as `Error response from daemon: <message>`.
//! Every failure inside luastrip — a malformed request, an unreachable daemon, a failing script,
//! adapter or helper — is an [`Error`] that records where it came from ([`Source`]), and
//! [`Error::to_response`] is the single place where it becomes that Docker JSON reply.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::{full, Body};

/// Who caused an error. Kept in the journal so a user can tell "my script broke" from "the
/// daemon is down" at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The client sent something we cannot forward faithfully.
    Client,
    /// The Docker daemon could not be reached or broke the connection.
    Daemon,
    /// A Lua route script failed or exceeded a limit.
    Script,
    /// An external (Powerstrip) adapter failed.
    Adapter,
    /// A built-in helper (ZFS, overlay) failed.
    Helper,
    /// A bug or resource problem inside luastrip.
    Internal,
}

impl std::fmt::Display for Source {
    /// The lower-case name, as in the JSON (`script`, `daemon` …).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Client => "client",
            Source::Daemon => "daemon",
            Source::Script => "script",
            Source::Adapter => "adapter",
            Source::Helper => "helper",
            Source::Internal => "internal",
        })
    }
}

/// Everything that can go wrong while serving a call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request cannot be served as sent (bad path, body too large …).
    #[error("luastrip: {message}")]
    Client { status: StatusCode, message: String },
    /// Connecting to the daemon socket failed; nothing was sent.
    #[error("luastrip: cannot reach the Docker daemon at {upstream}: {reason}")]
    DaemonUnreachable { upstream: String, reason: String },
    /// The daemon took the request and sent no answer within the upstream timeout.
    #[error(
        "luastrip: the Docker daemon at {upstream} did not answer {what} within {after_s} s \
         (--upstream-timeout-s)"
    )]
    DaemonTimeout {
        upstream: String,
        what: String,
        after_s: u64,
    },
    /// The daemon connection broke after the request was (partly) sent.
    #[error("luastrip: the Docker daemon at {upstream} failed: {reason}")]
    Daemon { upstream: String, reason: String },
    /// A route script threw or exceeded a budget; `location` is `file:line`.
    #[error("luastrip: script error at {location}: {reason}")]
    Script { location: String, reason: String },
    /// An external adapter failed; the call fails closed.
    #[error("luastrip: adapter {adapter} failed: {reason}")]
    Adapter { adapter: String, reason: String },
    /// A built-in helper failed.
    #[error("luastrip: {helper} helper failed: {reason}")]
    Helper { helper: String, reason: String },
    /// Something inside luastrip broke.
    #[error("luastrip: internal error: {0}")]
    Internal(String),
}

/// A helper's or store's flags that cannot work, found at start-up: the message names the flag
/// (`--zfs-pool tank: no such pool`). `serve` stops with it before any socket appears.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Error {
    /// A client error with the given status.
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Error::Client {
            status,
            message: message.into(),
        }
    }

    /// Where the error came from.
    pub fn source_kind(&self) -> Source {
        match self {
            Error::Client { .. } => Source::Client,
            Error::DaemonUnreachable { .. }
            | Error::Daemon { .. }
            | Error::DaemonTimeout { .. } => Source::Daemon,
            Error::Script { .. } => Source::Script,
            Error::Adapter { .. } => Source::Adapter,
            Error::Helper { .. } => Source::Helper,
            Error::Internal(_) => Source::Internal,
        }
    }

    /// The HTTP status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Client { status, .. } => *status,
            Error::DaemonTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::DaemonUnreachable { .. } | Error::Daemon { .. } | Error::Adapter { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Error::Script { .. } | Error::Helper { .. } | Error::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The message without its `luastrip: ` prefix (which tells a docker CLI user who spoke),
    /// for places that name luastrip already: start-up errors, `luastrip check`.
    pub fn detail(&self) -> String {
        let text = self.to_string();
        match text.strip_prefix("luastrip: ") {
            Some(rest) => rest.to_string(),
            None => text,
        }
    }

    /// The Docker-format reply: `{"message": "..."}` with [`Error::status`].
    pub fn to_response(&self) -> Response<Body> {
        json_message(self.status(), &self.to_string())
    }
}

/// A body dockerd would read differently from the hooks is the client's mistake: a 400.
impl From<crate::route::json::JsonError> for Error {
    fn from(e: crate::route::json::JsonError) -> Self {
        Error::client(StatusCode::BAD_REQUEST, e.to_string())
    }
}

/// A Docker-style JSON error reply. The daemon ends its JSON bodies with a newline; so do we.
pub fn json_message(status: StatusCode, message: &str) -> Response<Body> {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    let mut body = serde_json::to_vec(&Message { message }).unwrap_or_default();
    body.push(b'\n');
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn unreachable_daemon_is_a_502_docker_json_message() {
        let err = Error::DaemonUnreachable {
            upstream: "unix:///nope.sock".into(),
            reason: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(err.source_kind(), Source::Daemon);
        let res = err.to_response();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["message"],
            "luastrip: cannot reach the Docker daemon at unix:///nope.sock: No such file or directory (os error 2)"
        );
    }

    #[tokio::test]
    async fn messages_with_quotes_stay_valid_json() {
        let err = Error::client(StatusCode::BAD_REQUEST, "bad \"path\"\n");
        assert_eq!(err.source_kind(), Source::Client);
        let res = err.to_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["message"], "luastrip: bad \"path\"\n");
    }
}
