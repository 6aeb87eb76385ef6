//! What kind of traffic each Docker route carries: the one table every layer (scripts, adapters,
//! intercept, journal, the hijack driver) consults, so that none of them guesses from framing or
//! from a Content-Type the client chose.
//!
//! * **Request bodies.** Most API bodies are small JSON documents that hooks must always be able
//!   to read, whatever Content-Type the client sent (dockerd ignores it for these routes). The
//!   routes below carry a *stream* — a tar archive or a build context — that is never buffered for
//!   a hook:
//!
//!   | route | body |
//!   |---|---|
//!   | `POST /build` | build context (tar) |
//!   | `POST /images/create` | `docker import -` (tar) |
//!   | `POST /images/load` | `docker load` (tar) |
//!   | `PUT /containers/{id}/archive` | `docker cp` into a container (tar) |
//!   | `POST /plugins/create` | plugin root filesystem (tar) |
//!
//! * **Responses.** A response streams on after its head (post hooks see the head only) when the
//!   daemon upgrades (`101`), when its Content-Type is Docker's raw or multiplexed stream, or when
//!   its route is one of:
//!
//!   | route | answer |
//!   |---|---|
//!   | `GET /containers/{id}/logs`, `GET /services/{id}/logs`, `GET /tasks/{id}/logs` | log stream |
//!   | `GET /events` | event stream |
//!   | `POST /containers/{id}/attach`, `GET /containers/{id}/attach/ws`, `POST /exec/{id}/start` | hijacked session |
//!   | `POST /containers/{id}/wait` | head now, body when the container exits |
//!   | `GET /containers/{id}/stats` unless `stream` is false | one JSON document per second |
//!   | `GET /containers/{id}/export`, `GET /containers/{id}/archive` | tar |
//!   | `POST /build`, `POST /images/create`, `POST /images/load`, `POST /images/{name}/push` | progress |
//!   | `GET /images/get`, `GET /images/{name}/get` | `docker save` (tar) |
//!   | `POST /plugins/pull`, `POST /plugins/{name}/upgrade`, `POST /plugins/{name}/push` | progress |
//!   | `POST /session`, `POST /grpc` | BuildKit sessions (upgraded) |
//!
//!   Every other response is read whole for a post hook, however the daemon framed it (chunked or
//!   with a length), up to `--body-limit-mb`.
//!
//! Image and plugin names span slashes (`reg.example:5000/team/bb:1`), as dockerd's `{name:.*}`
//! does, so those routes are matched by prefix and suffix.

use http::Method;

use super::query;

/// What a request body is, by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// A JSON document (or nothing): hooks may read it.
    Json,
    /// A tar archive or build context: it streams to the daemon, never buffered.
    Stream,
}

/// The kind of request body `method path` carries.
pub fn request_body(method: &Method, path: &str) -> RequestBody {
    let s = segments(path);
    let stream = matches!(
        (method.as_str(), s.as_slice()),
        ("POST", ["build"])
            | ("POST", ["images", "create"])
            | ("POST", ["images", "load"])
            | ("PUT", ["containers", _, "archive"])
            | ("POST", ["plugins", "create"])
    );
    if stream {
        RequestBody::Stream
    } else {
        RequestBody::Json
    }
}

/// Whether the route's answer streams on after its head. `query` is the raw query string.
pub fn response_streams(method: &Method, path: &str, query: &str) -> bool {
    let s = segments(path);
    match (method.as_str(), s.as_slice()) {
        ("GET", ["containers", _, "logs"])
        | ("GET", ["services", _, "logs"])
        | ("GET", ["tasks", _, "logs"])
        | ("GET", ["events"])
        | ("GET", ["containers", _, "attach", "ws"])
        | ("POST", ["containers", _, "wait"])
        | ("GET", ["containers", _, "export"])
        | ("GET", ["containers", _, "archive"])
        | ("POST", ["build"])
        | ("POST", ["images", "create"])
        | ("POST", ["images", "load"])
        | ("GET", ["images", "get"])
        | ("POST", ["plugins", "pull"])
        | ("POST", ["session"])
        | ("POST", ["grpc"]) => true,
        ("GET", ["containers", _, "stats"]) => {
            query::first(query, "stream").is_none_or(|v| query::bool_value(&v))
        }
        ("POST", ["images", .., "push"]) | ("GET", ["images", .., "get"]) => s.len() > 2,
        ("POST", ["plugins", .., "upgrade"]) | ("POST", ["plugins", .., "push"]) => s.len() > 2,
        _ => is_hijack_route(method, path),
    }
}

/// `POST /containers/{id}/attach` and `POST /exec/{id}/start`: the routes the daemon hijacks
/// even for old clients that send no `Upgrade` header.
pub fn is_hijack_route(method: &Method, path: &str) -> bool {
    method == Method::POST
        && matches!(
            segments(path).as_slice(),
            ["containers", _, "attach"] | ["exec", _, "start"]
        )
}

/// The path's segments without allocating: all of them up to 8; for a longer path the first 4
/// and the last 4, which keeps every pattern of the tables above meaning what it says (fixed
/// patterns are at most 4 long, and `..` patterns look only at the ends).
fn segments(path: &str) -> Segments<'_> {
    let mut s = Segments {
        all: [""; 8],
        len: 0,
    };
    let mut tail = [""; 4];
    let mut total = 0;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if total < 8 {
            s.all[total] = seg;
        }
        tail[total % 4] = seg;
        total += 1;
    }
    if total > 8 {
        for i in 0..4 {
            s.all[4 + i] = tail[(total + i) % 4];
        }
    }
    s.len = total.min(8);
    s
}

struct Segments<'a> {
    all: [&'a str; 8],
    len: usize,
}

impl<'a> Segments<'a> {
    fn as_slice(&self) -> &[&'a str] {
        &self.all[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_bodies_stream_and_api_bodies_are_json() {
        let p = Method::POST;
        assert_eq!(request_body(&p, "/build"), RequestBody::Stream);
        assert_eq!(request_body(&p, "/images/load"), RequestBody::Stream);
        assert_eq!(request_body(&p, "/images/create"), RequestBody::Stream);
        assert_eq!(request_body(&p, "/plugins/create"), RequestBody::Stream);
        assert_eq!(
            request_body(&Method::PUT, "/containers/abc/archive"),
            RequestBody::Stream
        );
        for json in [
            "/containers/create",
            "/containers/abc/start",
            "/exec/abc/start",
            "/containers/abc/archive",
            "/volumes/create",
            "/luastrip/anything",
        ] {
            assert_eq!(request_body(&p, json), RequestBody::Json, "{json}");
        }
    }

    #[test]
    fn streaming_answers_by_route() {
        let (g, p) = (Method::GET, Method::POST);
        assert!(response_streams(&g, "/containers/abc/logs", ""));
        assert!(response_streams(&g, "/events", ""));
        assert!(response_streams(&p, "/containers/abc/wait", ""));
        assert!(response_streams(&p, "/exec/abc/start", ""));
        assert!(response_streams(&g, "/containers/abc/stats", ""));
        assert!(response_streams(&g, "/containers/abc/stats", "stream=1"));
        assert!(!response_streams(&g, "/containers/abc/stats", "stream=0"));
        assert!(!response_streams(
            &g,
            "/containers/abc/stats",
            "stream=false&stream=1"
        ));
        assert!(response_streams(
            &p,
            "/images/reg.example:5000/team/bb:1/push",
            ""
        ));
        assert!(response_streams(&g, "/images/team/bb/get", ""));
        assert!(response_streams(&g, "/images/get", ""));
        assert!(response_streams(&p, "/plugins/team/p:1/upgrade", ""));
        assert!(!response_streams(&p, "/images/push", ""));
        // Long names keep their ends.
        assert!(response_streams(
            &p,
            "/images/a/b/c/d/e/f/g/h/i/j:1/push",
            ""
        ));
        assert!(!response_streams(
            &p,
            "/images/a/b/c/d/e/f/g/h/i/j:1/tag",
            ""
        ));
        assert!(!response_streams(&g, "/containers/a/b/c/d/e/f/g/logs", ""));
        for json in [
            "/containers/abc/json",
            "/containers/json",
            "/images/team/bb/json",
            "/info",
            "/version",
        ] {
            assert!(!response_streams(&g, json, ""), "{json}");
        }
        assert!(!response_streams(&p, "/containers/create", ""));
    }

    #[test]
    fn hijack_routes() {
        assert!(is_hijack_route(&Method::POST, "/containers/abc/attach"));
        assert!(is_hijack_route(&Method::POST, "/exec/abc/start"));
        assert!(!is_hijack_route(&Method::GET, "/containers/abc/attach"));
        assert!(!is_hijack_route(&Method::POST, "/exec/abc/resize"));
        assert!(!is_hijack_route(&Method::POST, "/containers/abc/attach/ws"));
    }
}
