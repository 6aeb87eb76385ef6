//! JSON bodies as dockerd reads them, checked before any hook sees them.
//!
//! dockerd decodes bodies with Go's `encoding/json`, which a hook's view (serde, Lua tables) does
//! not share:
//!
//! * a key matches a struct field **case-insensitively**, with Unicode simple folding (`ſ` is
//!   `s`, the Kelvin sign `K` is `k`): `"hostconfig"` is `HostConfig` to dockerd, and nothing to
//!   a hook that reads `spec.HostConfig`;
//! * a **repeated key** merges into the same struct (`"HostConfig":{…},"HostConfig":{…}`), where
//!   serde keeps only the last;
//! * the create body still has a **legacy place** for HostConfig fields: its top level;
//! * the decoder stops after the first JSON value, and accepts invalid UTF-8.
//!
//! luastrip **rejects** what would be read differently, with a 400 naming the key, rather than
//! rewriting it: every Docker client (the CLI, compose, docker-py) sends canonical bodies, so a
//! body that needs folding or merging is a mistake or an attack. [`check`] refuses:
//!
//! * a body that is not exactly one JSON value in UTF-8;
//! * a key repeated in one object, exactly or once folded;
//! * a key written with escapes (`"Privil\u0065ged"`) or with a character that folds to ASCII;
//! * outside free-form maps (`Labels`, `Options`, `DriverOpts`, …, whose keys are the user's), a
//!   key that folds to one of Docker's field names without being spelled as it;
//! * in `POST /containers/create`, HostConfig fields at the top level.
//!
//! Keys that are not Docker fields at all pass: dockerd ignores them.

use std::collections::HashSet;

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the body is not valid JSON ({0}); dockerd would read it differently")]
    Syntax(String),
    #[error("the key {key:?} appears twice in {at} (dockerd merges repeated keys)")]
    Repeated { at: String, key: String },
    #[error(
        "the key {key:?} in {at} is spelled with escapes or characters that fold to other \
         letters; write it plainly"
    )]
    Disguised { at: String, key: String },
    #[error(
        "the key {key:?} in {at} is not Docker's field name {field:?} (dockerd matches field \
         names case-insensitively); spell it {field:?}"
    )]
    Folded {
        at: String,
        key: String,
        field: &'static str,
    },
    #[error(
        "{key:?} is a HostConfig field at the top level of the create body, a legacy place \
         dockerd still reads; put it inside \"HostConfig\""
    )]
    LegacyPlace { key: String },
}

/// Check a JSON API body of `method path` (see the module docs). An empty body passes.
pub fn check(method: &str, path: &str, body: &[u8]) -> Result<(), JsonError> {
    let create = method == "POST" && path == "/containers/create";
    check_value(body, Context::Struct, create, is_swarm_route(path))
}

/// Check the JSON values `POST /build` carries in its query (`buildargs`, `labels`: maps;
/// `ulimits`, `cachefrom`: lists), as [`check`] does bodies. Other routes have none.
pub fn check_query(method: &str, path: &str, pairs: &[(String, String)]) -> Result<(), JsonError> {
    if method != "POST" || path != "/build" {
        return Ok(());
    }
    for (k, v) in pairs {
        let ctx = match k.as_str() {
            "buildargs" | "labels" => Context::Map,
            "ulimits" | "cachefrom" => Context::Struct,
            _ => continue,
        };
        check_value(v.as_bytes(), ctx, false, false).map_err(|e| match e {
            JsonError::Syntax(m) => JsonError::Syntax(format!("in the query parameter {k}: {m}")),
            other => other,
        })?;
    }
    Ok(())
}

fn check_value(body: &[u8], ctx: Context, create: bool, swarm: bool) -> Result<(), JsonError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| JsonError::Syntax(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
    if is_blank(body) {
        return Ok(());
    }
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        depth: 0,
        swarm,
    };
    p.ws();
    p.value(&mut Vec::new(), ctx, create)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::Syntax(format!(
            "more data after the JSON value at byte {}",
            p.i
        )));
    }
    Ok(())
}

/// Whether a body is empty but for JSON's white space (space, tab, CR, LF: not Rust's or Unicode's
/// wider idea of it). Such a body is no body.
pub fn is_blank(body: &[u8]) -> bool {
    body.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Whether an object's keys are Docker field names or the user's own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Struct,
    Map,
}

/// How deep bodies may nest (Go's decoder allows 10000; Docker bodies need a dozen).
const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
    /// The body is a swarm spec (see [`SWARM_SPELLINGS`]).
    swarm: bool,
}

impl Parser<'_> {
    fn err(&self, what: &str) -> JsonError {
        JsonError::Syntax(format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, at: &mut Vec<String>, ctx: Context, create: bool) -> Result<(), JsonError> {
        match self.s.get(self.i) {
            Some(b'{') => self.object(at, ctx, create),
            Some(b'[') => {
                self.enter()?;
                self.i += 1;
                self.ws();
                if !self.eat(b']') {
                    loop {
                        self.ws();
                        self.value(at, ctx, false)?;
                        self.ws();
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.err("expected ',' or ']'"));
                        }
                    }
                }
                self.depth -= 1;
                Ok(())
            }
            Some(b'"') => self.string().map(|_| ()),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a JSON value")),
        }
    }

    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deep"));
        }
        Ok(())
    }

    fn object(
        &mut self,
        at: &mut Vec<String>,
        ctx: Context,
        create: bool,
    ) -> Result<(), JsonError> {
        self.enter()?;
        self.i += 1;
        let mut seen: HashSet<String> = HashSet::new();
        self.ws();
        if !self.eat(b'}') {
            loop {
                self.ws();
                if self.s.get(self.i) != Some(&b'"') {
                    return Err(self.err("expected a key"));
                }
                let (key, escaped) = self.string()?;
                let here = || display_path(at);
                let folded = fold(&key);
                if escaped || key.chars().any(folds_to_ascii) {
                    return Err(JsonError::Disguised { at: here(), key });
                }
                // Two keys Go would read as one: exact repeats, and (in structs) folded repeats.
                let slot = match (ctx, &folded) {
                    (Context::Struct, Some(f)) => f.clone(),
                    _ => key.clone(),
                };
                if !seen.insert(slot) {
                    return Err(JsonError::Repeated { at: here(), key });
                }
                if ctx == Context::Struct {
                    if let Some(field) = folded.as_deref().and_then(|f| field_for(f, self.swarm)) {
                        if field != key {
                            return Err(JsonError::Folded {
                                at: here(),
                                key,
                                field,
                            });
                        }
                    }
                }
                if create && at.is_empty() && is_host_config_field(&key) {
                    return Err(JsonError::LegacyPlace { key });
                }
                self.ws();
                if !self.eat(b':') {
                    return Err(self.err("expected ':'"));
                }
                self.ws();
                let inner = if ctx == Context::Struct && is_map_field(at, &key) {
                    Context::Map
                } else {
                    Context::Struct
                };
                at.push(key);
                self.value(at, inner, false)?;
                at.pop();
                self.ws();
                if self.eat(b'}') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.err("expected ',' or '}'"));
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// A string; returns its text (escapes left as written) and whether it had escapes.
    fn string(&mut self) -> Result<(String, bool), JsonError> {
        self.i += 1;
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    match self.s.get(self.i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                        Some(b'u') => {
                            let hex = self.s.get(self.i + 2..self.i + 6);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return Err(self.err("bad \\u escape"));
                            }
                            self.i += 6;
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                Some(&b) if b < 0x20 => return Err(self.err("control character in a string")),
                Some(_) => self.i += 1,
            }
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += 1;
        Ok((text, escaped))
    }

    fn literal(&mut self, word: &str) -> Result<(), JsonError> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.i;
        self.eat(b'-');
        let digits = |p: &mut Self| {
            let from = p.i;
            while p.s.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - from
        };
        match self.s.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err("bad number")),
        }
        if self.eat(b'.') && digits(self) == 0 {
            return Err(self.err("bad number"));
        }
        if self.s.get(self.i).is_some_and(|b| *b == b'e' || *b == b'E') {
            self.i += 1;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if digits(self) == 0 {
                return Err(self.err("bad number"));
            }
        }
        debug_assert!(self.i > start);
        Ok(())
    }
}

fn display_path(at: &[String]) -> String {
    if at.is_empty() {
        "the body".to_string()
    } else {
        at.join(".")
    }
}

/// Characters outside ASCII that Go's field matching folds onto ASCII letters.
fn folds_to_ascii(c: char) -> bool {
    matches!(c, '\u{017F}' | '\u{212A}')
}

/// A key as Go's field matching compares it: ASCII upper-cased, `ſ` as `S`, the Kelvin sign as
/// `K`. `None` for keys with other non-ASCII characters (they can never match a field name).
fn fold(key: &str) -> Option<String> {
    key.chars()
        .map(|c| match c {
            '\u{017F}' => Some('S'),
            '\u{212A}' => Some('K'),
            c if c.is_ascii() => Some(c.to_ascii_uppercase()),
            _ => None,
        })
        .collect()
}

/// The Docker field name `folded` (see [`fold`]) stands for, if any.
fn field_for(folded: &str, swarm: bool) -> Option<&'static str> {
    let spelled = |f: &&&str| f.len() == folded.len() && f.eq_ignore_ascii_case(folded);
    if swarm {
        // Swarm's structs spell a few fields their own way (`NanoCPUs`, not `NanoCpus`).
        if let Some(f) = SWARM_SPELLINGS.iter().find(spelled) {
            return Some(f);
        }
    }
    FIELDS.iter().chain(HOST_CONFIG).find(spelled).copied()
}

/// Fields swarm's structs (services, tasks) spell differently from the container's.
const SWARM_SPELLINGS: &[&str] = &["NanoCPUs", "TTY", "HealthCheck"];

/// Whether `path` takes swarm's structs (services, swarm, nodes, secrets, configs).
fn is_swarm_route(path: &str) -> bool {
    let first = path.split('/').find(|s| !s.is_empty()).unwrap_or("");
    matches!(
        first,
        "services" | "swarm" | "nodes" | "secrets" | "configs" | "tasks"
    )
}

/// Whether the object under `key` (at `parent`) is a free-form map: its keys are the user's
/// (label names, option names, paths, ports, network names), not Docker's field names.
fn is_map_field(parent: &[String], key: &str) -> bool {
    match key {
        "Labels" | "Options" | "DriverOpts" | "Sysctls" | "StorageOpt" | "Tmpfs" | "Volumes"
        | "ExposedPorts" | "PortBindings" | "Annotations" | "EndpointsConfig" | "AuxAddress"
        | "AuxiliaryAddresses" | "BuildArgs" | "Filters" | "Args" => true,
        // LogConfig.Config / LogDriver's options are a map; every other "Config" is a struct.
        "Config" => parent
            .last()
            .is_some_and(|p| p == "LogConfig" || p == "LogDriver"),
        _ => false,
    }
}

/// HostConfig fields dockerd still reads at the top level of a create body (its legacy place).
fn is_host_config_field(key: &str) -> bool {
    let Some(folded) = fold(key) else {
        return false;
    };
    HOST_CONFIG.iter().any(|f| f.eq_ignore_ascii_case(&folded)) || folded == "CPUSET"
}

/// Fields of `HostConfig` (with its embedded `Resources`), as dockerd 20.10+ reads them.
const HOST_CONFIG: &[&str] = &[
    "Binds",
    "ContainerIDFile",
    "LogConfig",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "AutoRemove",
    "VolumeDriver",
    "VolumesFrom",
    "ConsoleSize",
    "Annotations",
    "CapAdd",
    "CapDrop",
    "CgroupnsMode",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "IpcMode",
    "Cgroup",
    "Links",
    "OomScoreAdj",
    "PidMode",
    "Privileged",
    "PublishAllPorts",
    "ReadonlyRootfs",
    "SecurityOpt",
    "StorageOpt",
    "Tmpfs",
    "UTSMode",
    "UsernsMode",
    "ShmSize",
    "Sysctls",
    "Runtime",
    "Isolation",
    "CpuShares",
    "Memory",
    "NanoCpus",
    "CgroupParent",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetCpus",
    "CpusetMems",
    "Devices",
    "DeviceCgroupRules",
    "DeviceRequests",
    "KernelMemory",
    "KernelMemoryTCP",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "OomKillDisable",
    "PidsLimit",
    "Ulimits",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
    "Mounts",
    "MaskedPaths",
    "ReadonlyPaths",
    "Init",
];

/// Every other field name of the request bodies dockerd decodes into structs: containers
/// (Config, NetworkingConfig, mounts, devices, health checks), exec, update, volumes, networks,
/// plugins, swarm services, secrets and configs. A key that folds to one of these (or to one of
/// [`HOST_CONFIG`]) must be spelled exactly as it.
const FIELDS: &[&str] = &[
    // container.Config
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "ExposedPorts",
    "HostConfig",
    "NetworkingConfig",
    // HealthConfig
    "Test",
    "Interval",
    "Timeout",
    "StartPeriod",
    "StartInterval",
    "Retries",
    // HostConfig and Resources: HOST_CONFIG, searched too
    "Cpuset",
    // RestartPolicy, LogConfig, devices, ulimits, throttles
    "Name",
    "MaximumRetryCount",
    "Type",
    "Config",
    "PathOnHost",
    "PathInContainer",
    "CgroupPermissions",
    "Driver",
    "Count",
    "DeviceIDs",
    "Capabilities",
    "Options",
    "Soft",
    "Hard",
    "Path",
    "Weight",
    "Rate",
    // mount.Mount
    "Source",
    "Target",
    "ReadOnly",
    "Consistency",
    "BindOptions",
    "VolumeOptions",
    "TmpfsOptions",
    "Propagation",
    "NonRecursive",
    "CreateMountpoint",
    "ReadOnlyNonRecursive",
    "ReadOnlyForceRecursive",
    "NoCopy",
    "DriverConfig",
    "Subpath",
    "SizeBytes",
    "Mode",
    // NetworkingConfig, EndpointSettings, IPAM, network connect
    "EndpointsConfig",
    "EndpointConfig",
    "IPAMConfig",
    "Aliases",
    "DriverOpts",
    "GwPriority",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "DNSNames",
    "IPv4Address",
    "IPv6Address",
    "LinkLocalIPs",
    // network create
    "CheckDuplicate",
    "Scope",
    "EnableIPv4",
    "EnableIPv6",
    "IPAM",
    "Internal",
    "Attachable",
    "Ingress",
    "ConfigOnly",
    "ConfigFrom",
    "Network",
    "Subnet",
    "IPRange",
    "AuxAddress",
    "Container",
    "Force",
    // exec
    "Privileged",
    "DetachKeys",
    "Detach",
    // volume create
    "ClusterVolumeSpec",
    // plugins and privileges
    "Description",
    "Value",
    // swarm services, secrets, configs
    "TaskTemplate",
    "ContainerSpec",
    "PluginSpec",
    "NetworkAttachmentSpec",
    "Command",
    "Args",
    "Dir",
    "Groups",
    "Privileges",
    "CredentialSpec",
    "SELinuxContext",
    "Seccomp",
    "AppArmor",
    "NoNewPrivileges",
    "StopGracePeriod",
    "Hosts",
    "DNSConfig",
    "Nameservers",
    "Search",
    "Secrets",
    "Configs",
    "CapabilityAdd",
    "CapabilityDrop",
    "Resources",
    "Limits",
    "Reservations",
    "MemoryBytes",
    "Pids",
    "GenericResources",
    "Condition",
    "Delay",
    "MaxAttempts",
    "Window",
    "Placement",
    "Constraints",
    "Preferences",
    "MaxReplicas",
    "Platforms",
    "Networks",
    "LogDriver",
    "ForceUpdate",
    "UpdateConfig",
    "RollbackConfig",
    "Parallelism",
    "FailureAction",
    "Monitor",
    "MaxFailureRatio",
    "Order",
    "EndpointSpec",
    "Ports",
    "Protocol",
    "TargetPort",
    "PublishedPort",
    "PublishMode",
    "Replicated",
    "Global",
    "ReplicatedJob",
    "GlobalJob",
    "Replicas",
    "File",
    "SecretID",
    "SecretName",
    "ConfigID",
    "ConfigName",
    "UID",
    "GID",
    "Data",
    "Templating",
    // swarm init / join / update
    "ListenAddr",
    "AdvertiseAddr",
    "DataPathAddr",
    "DataPathPort",
    "DefaultAddrPool",
    "ForceNewCluster",
    "SubnetSize",
    "Spec",
    "RemoteAddrs",
    "JoinToken",
    "Orchestration",
    "Raft",
    "Dispatcher",
    "CAConfig",
    "EncryptionConfig",
    "TaskDefaults",
    "AutoLockManagers",
    // container update
    "RestartPolicy",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn create(body: &str) -> Result<(), JsonError> {
        check("POST", "/containers/create", body.as_bytes())
    }

    #[test]
    fn the_docker_cli_create_body_passes() {
        let body = include_str!("../../tests/fixtures/create-body.json");
        assert_eq!(create(body), Ok(()));
        assert_eq!(create(""), Ok(()));
        assert_eq!(create("  \n"), Ok(()));
        // Found by the property test: a vertical tab is not JSON white space.
        assert!(create("\u{b}").is_err());
        assert!(create("\u{c}").is_err());
    }

    #[test]
    fn keys_dockerd_would_fold_are_refused_by_name() {
        let e = create(r#"{"Image":"bb","hostconfig":{"Privileged":true}}"#).unwrap_err();
        assert!(
            matches!(
                &e,
                JsonError::Folded {
                    field: "HostConfig",
                    ..
                }
            ),
            "{e}"
        );
        let e = create(r#"{"HostConfig":{"privileged":true}}"#).unwrap_err();
        assert!(e.to_string().contains("HostConfig"), "{e}");
        assert!(e.to_string().contains("\"Privileged\""), "{e}");
        for bad in [
            r#"{"HostConfig":{"binds":["/:/host"]}}"#,
            r#"{"HostConfig":{"Mounts":[{"type":"bind","Source":"/","Target":"/h"}]}}"#,
            r#"{"HostConfig":{"CAPADD":["ALL"]}}"#,
            r#"{"HostConfig":{"PidMode":"host","ipcmode":"host"}}"#,
        ] {
            assert!(
                matches!(create(bad), Err(JsonError::Folded { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        for bad in [
            r#"{"HostConfig":{"Privileged":true},"HostConfig":{"Memory":0}}"#,
            r#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#,
            r#"{"Labels":{"a":"1","a":"2"}}"#,
            r#"{"Image":"a","IMAGE":"b"}"#,
        ] {
            let e = create(bad).unwrap_err();
            assert!(
                matches!(e, JsonError::Repeated { .. } | JsonError::Folded { .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn disguised_keys_are_refused() {
        for bad in [
            r#"{"HostConfig":{"Privil\u0065ged":true}}"#,
            "{\"HostConfig\":{\"\u{017F}ecurityOpt\":[\"seccomp=unconfined\"]}}",
            "{\"HostConfig\":{\"Sysctls\":{},\"\u{212A}ernelMemory\":1}}",
        ] {
            assert!(
                matches!(create(bad), Err(JsonError::Disguised { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn map_keys_are_the_users_own() {
        assert_eq!(
            create(
                r#"{"Labels":{"name":"x","image":"y","NAME":"z"},"HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-size":"1m","mode":"x"}}}}"#
            ),
            Ok(())
        );
        assert_eq!(
            create(r#"{"NetworkingConfig":{"EndpointsConfig":{"privileged":{"Aliases":["a"]}}}}"#),
            Ok(())
        );
        // ... but the structs inside a map are still checked.
        assert!(
            create(r#"{"NetworkingConfig":{"EndpointsConfig":{"n":{"aliases":["a"]}}}}"#).is_err()
        );
        // Keys that are no Docker field pass: dockerd ignores them.
        assert_eq!(create(r#"{"Image":"bb","luastrip-extra":1}"#), Ok(()));
    }

    #[test]
    fn build_options_in_the_query_are_checked_too() {
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            check_query(
                "POST",
                "/build",
                &q("buildargs", r#"{"http_proxy":"x","Name":"y"}"#)
            ),
            Ok(())
        );
        assert!(matches!(
            check_query("POST", "/build", &q("buildargs", r#"{"A":"1","A":"2"}"#)),
            Err(JsonError::Repeated { .. })
        ));
        assert!(matches!(
            check_query(
                "POST",
                "/build",
                &q("ulimits", r#"[{"name":"nofile","Soft":1,"Hard":1}]"#)
            ),
            Err(JsonError::Folded { field: "Name", .. })
        ));
        assert!(check_query("POST", "/build", &q("labels", "{")).is_err());
        assert_eq!(
            check_query("GET", "/containers/json", &q("filters", "{")),
            Ok(())
        );
    }

    #[test]
    fn swarm_specs_keep_their_own_spellings() {
        let service = br#"{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"bb","TTY":true,"HealthCheck":{"Test":["NONE"]}},"Resources":{"Limits":{"NanoCPUs":1000}}}}"#;
        assert_eq!(check("POST", "/services/create", service), Ok(()));
        // ... and a container's body its own: swarm's spelling there is a folded key.
        let e = create(r#"{"Image":"bb","TTY":true}"#).unwrap_err();
        assert!(matches!(e, JsonError::Folded { field: "Tty", .. }), "{e}");
        let e = create(r#"{"HostConfig":{"NanoCPUs":1}}"#).unwrap_err();
        assert!(
            matches!(
                e,
                JsonError::Folded {
                    field: "NanoCpus",
                    ..
                }
            ),
            "{e}"
        );
        let e = check(
            "POST",
            "/services/create",
            br#"{"TaskTemplate":{"ContainerSpec":{"Tty":true}}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, JsonError::Folded { field: "TTY", .. }), "{e}");
    }

    #[test]
    fn host_config_fields_at_the_top_of_a_create_body_are_refused() {
        for bad in [
            r#"{"Image":"bb","Privileged":true}"#,
            r#"{"Image":"bb","Binds":["/:/host"]}"#,
            r#"{"Image":"bb","Cpuset":"0"}"#,
        ] {
            assert!(
                matches!(create(bad), Err(JsonError::LegacyPlace { .. })),
                "{bad}"
            );
        }
        // Elsewhere the same keys are plain fields (exec's Privileged, update's Memory).
        assert_eq!(
            check(
                "POST",
                "/containers/abc/exec",
                br#"{"Privileged":true,"Cmd":["sh"]}"#
            ),
            Ok(())
        );
    }

    #[test]
    fn what_go_would_read_differently_is_refused() {
        for bad in [
            &b"{\"Image\":\"bb\"} {\"HostConfig\":{\"Privileged\":true}}"[..],
            b"{\"Image\":\"b\xffb\"}",
            b"{\"Image\":\"bb\",}",
            b"[1,2",
            b"{\"a\":01}",
            b"{\"a\":\"\\x\"}",
        ] {
            assert!(
                matches!(check("POST", "/x", bad), Err(JsonError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(check("POST", "/x", deep.as_bytes()).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2000, failure_persistence: None, ..Default::default()
        })]

        /// Never a panic; and whatever passes is JSON serde reads too.
        #[test]
        fn any_bytes_are_checked_without_panic(body in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(b"{}[]\":,\\ 0123456789-+.eEtrufalsn".to_vec()),
                proptest::prelude::any::<u8>(),
            ], 0..64)) {
            if check("POST", "/containers/create", &body).is_ok() && !is_blank(&body) {
                proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
                    "{:?}", String::from_utf8_lossy(&body));
            }
        }
    }
}
