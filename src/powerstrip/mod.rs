//! Powerstrip adapters: external HTTP hooks speaking Powerstrip's protocol v1, so that existing
//! adapters (any language) run unchanged.
//!
//! A pre-hook gets `{"PowerstripProtocolVersion": 1, "Type": "pre-hook", "ClientRequest":
//! {"Method", "Request", "Body"}}` and answers `{"PowerstripProtocolVersion": 1,
//! "ModifiedClientRequest": {...}}`; a post-hook also gets `"ServerResponse": {"ContentType",
//! "Body", "Code"}` and answers `"ModifiedServerResponse"`. Unlike Powerstrip, every field of the
//! answer is applied (Method and Request too, not only Body; Code and ContentType too), and every
//! failure — refused connection, timeout, non-2xx, non-JSON, missing keys, another protocol
//! version — is an error naming the adapter and the reason within the timeout, so the call fails
//! closed instead of hanging the client. Scripts use adapters through `powerstrip.adapter(url)`
//! (see `lua::powerstrip`).
//!
//! Adapters ran as containers, and `adapters.yml` named them by host name through Docker links
//! (`weave: http://weave/extension`). A URL whose host is a bare name (no dot, not `localhost`,
//! not an address) names a container: it is looked up through the daemon ([`Containers`]) and
//! reached at its overlay address, else at its address on a Docker network. The address found is
//! kept ([`Addresses`]) until the daemon's events say a container started, stopped, went or was
//! renamed, or a network connection changed ([`AddressFollower`]), and until the scripts reload;
//! so a restarted container (a new address) is found again, and a call costs no lookup
//! otherwise. An unknown or stopped container is an error naming it.

pub mod config;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::body::full;
use crate::outbound::{Outbound, Url};
use crate::upstream::Upstream;

/// How adapter containers are found: through the daemon, preferring the overlay network.
#[derive(Clone)]
pub struct Containers {
    pub daemon: Upstream,
    /// The overlay helper's network name (`--overlay-network`): its networks (that name, and
    /// `NAME-10.2.1.0-24`) come first.
    pub overlay_network: Option<String>,
    /// The addresses found, shared by every VM.
    pub known: Arc<Addresses>,
}

impl Containers {
    /// Where container `name` listens now: as last found, while nothing has changed since.
    pub async fn address(&self, name: &str) -> Result<IpAddr, String> {
        let generation = match self.known.get(name) {
            Ok(ip) => return Ok(ip),
            Err(generation) => generation,
        };
        let (ip, id) = self.look_up(name).await?;
        self.known.keep(name, ip, id, generation);
        Ok(ip)
    }

    /// Where container `name` listens, and its id, asked of the daemon.
    async fn look_up(&self, name: &str) -> Result<(IpAddr, String), String> {
        let c = self
            .daemon
            .get_json_found(&format!("/containers/{name}/json"))
            .await
            .map_err(|e| {
                format!(
                    "cannot look up the adapter container {name}: {}",
                    e.detail()
                )
            })?
            .ok_or_else(|| {
                format!(
                    "no container named {name} (the bare host of an adapter URL names a \
                     container; use an address, or a DNS name with a dot, for another host)"
                )
            })?;
        if c["State"]["Running"] != true {
            return Err(format!(
                "the adapter container {name} is not running ({})",
                c["State"]["Status"].as_str().unwrap_or("stopped")
            ));
        }
        let ip = pick_address(&c, self.overlay_network.as_deref()).ok_or_else(|| {
            format!("the adapter container {name} has no address on a network luastrip can reach")
        })?;
        Ok((ip, c["Id"].as_str().unwrap_or_default().to_string()))
    }
}

/// Adapter containers' addresses as last looked up. They are used only while the daemon's events
/// are followed ([`AddressFollower`]) and nothing that could change that container's address
/// has happened since: an event about it (by id, or by name: another container may take the
/// name) forgets it; a broken stream and a reload forget them all. Events about other containers
/// leave the addresses be (a busy daemon's every start and stop would otherwise cost a lookup
/// per call). A lookup under way when any event arrived is not kept (the generation tells): its
/// container's id is not known yet.
#[derive(Default)]
pub struct Addresses {
    known: Mutex<Known>,
    /// Told when an address is asked for while the events are not followed: the follower starts
    /// then (a gateway with no adapter container never opens the stream).
    wanted: tokio::sync::Notify,
}

#[derive(Default)]
struct Known {
    /// The events stream is open: an address change would be heard of.
    following: bool,
    /// Counts the times everything was forgotten.
    generation: u64,
    /// Name → (address, container id).
    by_name: HashMap<String, (IpAddr, String)>,
}

impl Addresses {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept address of `name`, or the generation to hand [`Addresses::keep`] with the
    /// address looked up.
    fn get(&self, name: &str) -> Result<IpAddr, u64> {
        let k = self.known();
        if !k.following {
            self.wanted.notify_one();
        }
        match k.by_name.get(name) {
            Some((ip, _)) if k.following => Ok(*ip),
            _ => Err(k.generation),
        }
    }

    /// Resolves once an address has been asked for (at once, if one was asked for already).
    pub async fn first_wanted(&self) {
        self.wanted.notified().await
    }

    fn keep(&self, name: &str, ip: IpAddr, id: String, generation: u64) {
        let mut k = self.known();
        if k.following && k.generation == generation {
            k.by_name.insert(name.to_string(), (ip, id));
        }
    }

    /// A daemon event (container start, die, destroy, rename; network connect, disconnect):
    /// forget the addresses of the containers it is about.
    pub fn event(&self, ev: &serde_json::Value) {
        let mut k = self.known();
        k.generation += 1;
        let attrs = &ev["Actor"]["Attributes"];
        let (id, names) = match ev["Type"].as_str() {
            Some("container") => (
                ev["Actor"]["ID"].as_str(),
                [attrs["name"].as_str(), attrs["oldName"].as_str()],
            ),
            Some("network") => (attrs["container"].as_str(), [None, None]),
            // Not what the follower asked for: forget everything rather than guess.
            _ => {
                k.by_name.clear();
                return;
            }
        };
        k.by_name.retain(|name, (_, kept)| {
            Some(kept.as_str()) != id
                && names
                    .iter()
                    .flatten()
                    .all(|n| n.trim_start_matches('/') != name)
        });
    }

    /// Forget every address; `following` says whether the events stream is open now.
    pub fn forget(&self, following: Option<bool>) {
        let mut k = self.known();
        k.generation += 1;
        k.by_name.clear();
        if let Some(f) = following {
            k.following = f;
        }
    }
}

/// Follows the daemon's events for [`Addresses`]: what could give a container another address
/// (or none) forgets them.
pub struct AddressFollower(pub Arc<Addresses>);

impl crate::events::Follower for AddressFollower {
    fn name(&self) -> &'static str {
        "adapter containers"
    }

    fn filters(&self) -> Option<String> {
        Some(
            r#"{"type":["container","network"],"event":["start","die","destroy","rename","connect","disconnect"]}"#
                .into(),
        )
    }

    fn opened(&self) -> crate::events::FollowFuture<'_> {
        self.0.forget(Some(true));
        Box::pin(async {})
    }

    fn closed(&self) {
        self.0.forget(Some(false));
    }

    fn event<'a>(&'a self, ev: &'a serde_json::Value) -> crate::events::FollowFuture<'a> {
        self.0.event(ev);
        Box::pin(async {})
    }
}

/// The client's request as adapters see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientRequest {
    pub method: String,
    /// Path and query as the client sent them, version prefix included: `/v1.41/containers/create?name=x`.
    pub request: String,
    /// The body as a string; `null` when there is none.
    pub body: Option<String>,
}

/// The daemon's response as post-hooks see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerResponse {
    pub content_type: String,
    pub body: String,
    pub code: u16,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Hook<'a> {
    powerstrip_protocol_version: u32,
    #[serde(rename = "Type")]
    kind: &'static str,
    client_request: &'a ClientRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_response: Option<&'a ServerResponse>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PreReply {
    powerstrip_protocol_version: Option<u32>,
    modified_client_request: Option<ClientRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PostReply {
    powerstrip_protocol_version: Option<u32>,
    modified_server_response: Option<ServerResponse>,
}

/// One adapter endpoint.
#[derive(Clone)]
pub struct Adapter {
    /// As configured, for messages.
    pub url: String,
    parsed: Url,
    client: Outbound,
    /// Bounds connect, send and the whole answer.
    pub timeout: Duration,
    /// Largest answer accepted.
    pub body_limit: usize,
    /// How a URL that names a container is resolved; without it, its host is a DNS name.
    pub containers: Option<Containers>,
}

impl Adapter {
    /// An adapter at `url` (`http://` or `unix://`).
    pub fn new(
        url: &str,
        client: Outbound,
        timeout: Duration,
        body_limit: usize,
    ) -> Result<Adapter, String> {
        Ok(Adapter {
            url: url.to_string(),
            parsed: Url::parse(url)?,
            client,
            timeout,
            body_limit,
            containers: None,
        })
    }

    /// Run the pre-hook: the adapter's modified request.
    pub async fn pre(&self, req: &ClientRequest) -> Result<ClientRequest, String> {
        let reply: PreReply = self
            .call(&Hook {
                powerstrip_protocol_version: 1,
                kind: "pre-hook",
                client_request: req,
                server_response: None,
            })
            .await?;
        check_version(reply.powerstrip_protocol_version)?;
        reply
            .modified_client_request
            .ok_or_else(|| "the reply has no ModifiedClientRequest".to_string())
    }

    /// Run the post-hook: the adapter's modified response.
    pub async fn post(
        &self,
        req: &ClientRequest,
        res: &ServerResponse,
    ) -> Result<ServerResponse, String> {
        let reply: PostReply = self
            .call(&Hook {
                powerstrip_protocol_version: 1,
                kind: "post-hook",
                client_request: req,
                server_response: Some(res),
            })
            .await?;
        check_version(reply.powerstrip_protocol_version)?;
        reply
            .modified_server_response
            .ok_or_else(|| "the reply has no ModifiedServerResponse".to_string())
    }

    async fn call<T: DeserializeOwned>(&self, hook: &Hook<'_>) -> Result<T, String> {
        let body = serde_json::to_vec(hook).map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&self.parsed.path)
            .body(full(Bytes::from(body.clone())))
            .map_err(|e| e.to_string())?;
        let h = req.headers_mut();
        h.insert(
            header::HOST,
            HeaderValue::from_str(&self.parsed.host).map_err(|e| e.to_string())?,
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let exchange = async {
            let at;
            let target = match (self.parsed.container(), &self.containers) {
                (Some((name, port)), Some(containers)) => {
                    at = self.parsed.at(containers.address(name).await?, port);
                    &at
                }
                _ => &self.parsed,
            };
            let res = self.client.send(target, req, self.timeout).await?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), self.body_limit)
                .collect()
                .await
                .map_err(|e| format!("reading the reply: {e}"))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                return Err(format!("it answered {status}: {}", text.trim()));
            }
            serde_json::from_slice::<T>(&bytes)
                .map_err(|e| format!("its reply is not Powerstrip protocol JSON: {e}"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no reply within {:?}", self.timeout))?
    }
}

/// Where a running container (its `docker inspect`) is reached: loopback with the host's
/// network; else its address on the overlay (networks named `overlay`, or `overlay-…`); else
/// its address on the first network (by name) that gave it one.
fn pick_address(c: &serde_json::Value, overlay: Option<&str>) -> Option<IpAddr> {
    if c["HostConfig"]["NetworkMode"] == "host" {
        return Some(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let on_overlay = |net: &str| {
        overlay.is_some_and(|o| net == o || net.strip_prefix(o).is_some_and(|r| r.starts_with('-')))
    };
    let networks: Vec<(&str, IpAddr)> = c["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(net, n)| Some((net.as_str(), n["IPAddress"].as_str()?.parse().ok()?)))
        .collect();
    networks
        .iter()
        .find(|(net, _)| on_overlay(net))
        .or(networks.first())
        .map(|(_, ip)| *ip)
}

fn check_version(v: Option<u32>) -> Result<(), String> {
    match v {
        Some(1) => Ok(()),
        Some(v) => Err(format!("it speaks PowerstripProtocolVersion {v}, not 1")),
        None => Err("the reply has no PowerstripProtocolVersion".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_kept_only_while_the_events_are_followed_and_quiet() {
        let known = Addresses::default();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let id = || "c0ffee".to_string();
        let event = |ty: &str, actor: &str, attrs: serde_json::Value| serde_json::json!({"Type": ty, "Action": "x", "Actor": {"ID": actor, "Attributes": attrs}});
        // Not following the events yet: nothing is kept.
        let g = known.get("a").unwrap_err();
        known.keep("a", ip, id(), g);
        assert!(known.get("a").is_err());
        // Following: kept.
        known.forget(Some(true));
        let keep_a = || {
            if let Err(g) = known.get("a") {
                known.keep("a", ip, id(), g);
            }
            assert_eq!(known.get("a"), Ok(ip));
        };
        keep_a();
        // Events about other containers leave it be ...
        known.event(&event(
            "container",
            "other",
            serde_json::json!({"name": "b"}),
        ));
        known.event(&event(
            "network",
            "net",
            serde_json::json!({"container": "other", "name": "a"}),
        ));
        assert_eq!(known.get("a"), Ok(ip));
        // ... but not one about it, by id, by its network connections, or by its name.
        for ev in [
            event("container", "c0ffee", serde_json::json!({"name": "a"})),
            event(
                "network",
                "net",
                serde_json::json!({"container": "c0ffee", "name": "n"}),
            ),
            event(
                "container",
                "other",
                serde_json::json!({"name": "a", "oldName": "/x"}),
            ),
            event(
                "container",
                "other",
                serde_json::json!({"name": "y", "oldName": "/a"}),
            ),
            event("service", "s", serde_json::json!({})),
        ] {
            keep_a();
            known.event(&ev);
            assert!(known.get("a").is_err(), "{ev}");
        }
        // A lookup begun before any event is not kept: its container's id was not known yet.
        let before = known.get("a").unwrap_err();
        known.event(&event(
            "container",
            "other",
            serde_json::json!({"name": "b"}),
        ));
        known.keep("a", ip, id(), before);
        assert!(known.get("a").is_err());
        // The stream broke: nothing is kept until it is open again.
        known.forget(Some(false));
        let g = known.get("a").unwrap_err();
        known.keep("a", ip, id(), g);
        assert!(known.get("a").is_err());
    }

    #[test]
    fn adapter_containers_are_reached_on_the_overlay_first() {
        let c = serde_json::json!({
            "HostConfig": {"NetworkMode": "adapters"},
            "NetworkSettings": {"Networks": {
                "adapters": {"IPAddress": "172.20.0.2"},
                "bridge": {"IPAddress": ""},
                "luastrip-10.2.1.0-24": {"IPAddress": "10.2.1.7"},
                "luastripper": {"IPAddress": "10.9.9.9"}
            }}
        });
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(pick_address(&c, Some("luastrip")), ip("10.2.1.7"));
        // Without the overlay helper, the first network (by name) with an address.
        assert_eq!(pick_address(&c, None), ip("172.20.0.2"));
        let host = serde_json::json!({"HostConfig": {"NetworkMode": "host"}});
        assert_eq!(pick_address(&host, Some("luastrip")), ip("127.0.0.1"));
        let none = serde_json::json!({"HostConfig": {"NetworkMode": "none"},
                                      "NetworkSettings": {"Networks": {"none": {"IPAddress": ""}}}});
        assert_eq!(pick_address(&none, None), None);
    }

    #[test]
    fn wire_format_uses_powerstrip_names() {
        let req = ClientRequest {
            method: "POST".into(),
            request: "/v1.41/containers/create?name=x".into(),
            body: None,
        };
        let res = ServerResponse {
            content_type: "application/json".into(),
            body: "{}".into(),
            code: 201,
        };
        let v = serde_json::to_value(Hook {
            powerstrip_protocol_version: 1,
            kind: "post-hook",
            client_request: &req,
            server_response: Some(&res),
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "PowerstripProtocolVersion": 1,
                "Type": "post-hook",
                "ClientRequest": {"Method": "POST", "Request": "/v1.41/containers/create?name=x", "Body": null},
                "ServerResponse": {"ContentType": "application/json", "Body": "{}", "Code": 201}
            })
        );
        assert!(check_version(Some(2)).unwrap_err().contains("2"));
        assert!(check_version(None).is_err());
    }
}
