---@meta
-- LuaLS type stubs for luastrip route scripts. Point your editor at this folder
-- (.luarc.json: { "workspace.library": ["<luastrip>/stdlib/types"] }) for completion and checks.

---@class luastrip.Request
---@field id integer            call id (as in the journal and logs)
---@field method string         upper-case HTTP method; writable in pre hooks
---@field path string           normalised path without the version prefix; writable in pre hooks
---@field version string|nil    Docker API version from the path ("1.41"), or nil
---@field query table<string,string>  decoded query parameters, the first of repeated keys (what dockerd uses); writable in pre hooks
---@field headers table<string,string> lower-case header names; writable in pre hooks
---@field params table<string,string>  values captured by {name} segments of the pattern
---@field body string|nil       the request body, read from the client on first access (nil on routes whose body is a tar stream)
---@field ctx table             shared by this call's pre and post hooks
local Request = {}

---Decode `body` as JSON (nil when there is no body); reads the body on first use.
---@return any
function Request:json() end

---Every value of a repeated query parameter, in order (`?t=a&t=b` gives {"a", "b"}).
---@param name string
---@return string[]
function Request:query_all(name) end

---Replace `body` with `value` encoded as JSON.
---@param value any
function Request:set_json(value) end

---@class luastrip.Response
---@field status integer
---@field headers table<string,string>
---@field body string|nil       nil for streaming and hijacked responses
---@field streaming boolean     true for streams (logs -f, events, attach …): only status and headers may change
local Response = {}

---@return any
function Response:json() end

---@param value any
function Response:set_json(value) end

---@class luastrip.Reply
---@field status integer|nil    default 200
---@field json any              a value to send as JSON, or
---@field body string|nil       raw bytes
---@field headers table<string,string>|nil

---@class luastrip.HttpResult
---@field status integer
---@field headers table<string,string>
---@field body string
local HttpResult = {}

---@return any
function HttpResult:json() end

route = {}

---Run `fn` before the daemon sees matching calls. Return a reply table to answer the call yourself.
---@param pattern string  "METHOD /path" with {name}, * and ** segments, no version prefix
---@param fn fun(req: luastrip.Request): luastrip.Reply|nil
function route.pre(pattern, fn) end

---Run `fn` after the daemon answered matching calls.
---@param pattern string
---@param fn fun(req: luastrip.Request, res: luastrip.Response)
function route.post(pattern, fn) end

---Answer matching calls from Lua; they never reach the daemon.
---@param pattern string
---@param fn fun(req: luastrip.Request): luastrip.Reply
function route.endpoint(pattern, fn) end

json = {}

---@param s string
---@return any
function json.decode(s) end

---@param v any
---@return string
function json.encode(v) end

---The JSON null value (a table field set to nil would vanish).
json.null = nil

---Mark `t` (or a new table) as a JSON array, so that an empty one encodes as [].
---@param t table|nil
---@return table
function json.array(t) end

---Mark `t` (or a new table) as a JSON object, so that an empty one encodes as {}.
---@param t table|nil
---@return table
function json.object(t) end

docker = {}

---Call the Docker daemon directly (not through the hooks). Reads the whole response body.
---@param opts {method: string|nil, path: string, query: string|table|nil, headers: table|nil, body: string|table|nil, timeout: number|nil}
---@return luastrip.HttpResult
function docker.request(opts) end

---@param path string
---@return luastrip.HttpResult
function docker.get(path) end

---@param path string
---@param body string|table|nil
---@return luastrip.HttpResult
function docker.post(path, body) end

---One of the daemon's events, as `/events` sends it.
---@class luastrip.ImageRef
---@field registry string    "docker.io", "registry.example:5000"
---@field repository string  "library/busybox", "team/app"
---@field tag string|nil
---@field digest string|nil
---@field name string        "docker.io/library/busybox"
---@field familiar string    "busybox": the name as the docker CLI shows it
---@field canonical string   "docker.io/library/busybox:latest": as docker pull reads it

---An image reference read as Docker reads it, or nil and Docker's reason.
---@param name string
---@return luastrip.ImageRef|nil
---@return string|nil why
function docker.image_ref(name) end

---@class luastrip.Event
---@field Type string "container", "network", "volume", "image", …
---@field Action string "start", "die", "destroy", "exec_start: sh", …
---@field Actor {ID: string, Attributes: table<string, string>}
---@field scope string
---@field time integer
---@field timeNano integer

---Call `fn(event)` once per matching event of the daemon (also what never passes through
---luastrip), in order, in one VM, under the hook budget. Only at a script's top level.
---@param filter {type: string|string[]|nil, event: string|string[]|nil, container: string|string[]|nil, image: string|string[]|nil, network: string|string[]|nil, volume: string|string[]|nil, label: string|string[]|nil, scope: string|string[]|nil}|nil
---@param fn fun(event: luastrip.Event)
function docker.on_event(filter, fn) end

http = {}

---Call an HTTP service: "http://host:port/path" or "unix:///path/to.sock:/path".
---@param opts {method: string|nil, url: string, headers: table|nil, body: string|table|nil, timeout: number|nil}
---@return luastrip.HttpResult
function http.request(opts) end

store = {}

---@param key string
---@return any
function store.get(key) end

---Set a JSON-able value; nil deletes.
---@param key string
---@param value any
function store.set(key, value) end

---Add `n` (default 1) to an integer value and return the result.
---@param key string
---@param n integer|nil
---@return integer
function store.incr(key, n) end

---@param key string
---@return boolean existed
function store.del(key) end

---@param prefix string|nil
---@return string[]
function store.keys(prefix) end

log = {}

---@param msg string
---@param fields table|nil
function log.debug(msg, fields) end
---@param msg string
---@param fields table|nil
function log.info(msg, fields) end
---@param msg string
---@param fields table|nil
function log.warn(msg, fields) end
---@param msg string
---@param fields table|nil
function log.error(msg, fields) end

powerstrip = {}

---A hook function that calls a Powerstrip (protocol v1) adapter; use it with route.pre / route.post.
---Pre: JSON bodies only; applies the adapter's Method, Request and Body. Post: skipped for
---streaming responses; applies Code, ContentType and Body. A failing adapter fails the call closed.
---@param url string  "http://host:port/path" or "unix:///path/to.sock:/path"
---@param opts {timeout: number|nil}|nil  timeout in seconds (default 10)
---@return fun(req: luastrip.Request, res: luastrip.Response|nil)
function powerstrip.adapter(url, opts) end

---@class luastrip.Snapshot
---@field tag string
---@field guid string   the same snapshot on every host it was sent to
---@field created integer  Unix seconds
---@field used integer  bytes

---@class luastrip.Volume
---@field name string
---@field dataset string  the backend's name for it (POOL/ROOT/NAME)
---@field mountpoint string  what a container binds
---@field created integer  Unix seconds
---@field new boolean|nil  this call created it
---@field owner string|nil  the gateway (--host-name) that owns it
---@field epoch integer|nil  the owner record's epoch: 1 when first claimed, one more at every handoff
---@field owned boolean  this copy is the volume (this gateway owns it, at the record's epoch); only that copy is writable
---@field refused string|nil  why this copy is not the volume, when it is not
---@field stale boolean|nil  the record gives the volume to this host at another epoch than this copy's
---@field orphaned boolean|nil  its owner was forgotten (`luastrip cluster forget`): see zfs.adopt
---@field move {to: string, step: "sending"|"cut-over", guid: string|nil, since: integer}|nil  a push under way
---@field standby {host: string, every: integer}|nil  where the owner sends it on a schedule (zfs.replicate)
---@field read_only boolean
---@field size integer  bytes used
---@field snapshots luastrip.Snapshot[]  oldest first

---The volume helper (`luastrip serve --volume-backend zfs --zfs-pool POOL`). Every function waits
---for `zfs` without being charged to the hook's budget, and raises a clear error when no backend
---is configured or a name is bad (`/`, `@`, `..`, spaces, empty, longer than 64).
zfs = {}

---The volume `name`, created (and claimed for this gateway) if missing: the same name gives the
---same volume. A copy another gateway owns is read-only.
---@param name string
---@return luastrip.Volume
function zfs.volume(name) end

---Every volume on this host.
---@return luastrip.Volume[]
function zfs.volumes() end

---Snapshot a volume; `tag` defaults to `luastrip-<unix ms>`.
---@param name string
---@param tag string|nil
---@return luastrip.Snapshot
function zfs.snapshot(name, tag) end

---@param name string
---@return luastrip.Snapshot[]  oldest first
function zfs.snapshots(name) end

---Roll a volume this gateway owns back to a snapshot. Newer snapshots are in the way unless
---`destroy_newer` (they are destroyed, as `zfs rollback -r`).
---@param name string
---@param tag string
---@param opts {destroy_newer: boolean|nil}|nil
---@return true
function zfs.rollback(name, tag, opts) end

---Destroy a volume and its snapshots on this host; refused while a container (running or not)
---uses it.
---@param name string
---@return true
function zfs.destroy(name) end

---@class luastrip.PushReport
---@field volume string
---@field to string
---@field base string|nil  the common snapshot step 1 sent from (nil: a full stream)
---@field step1_bytes integer  copied while containers ran (catch-up rounds included)
---@field step1_ms integer
---@field stopped string[]  containers stopped for the cut-over ({ stop = true })
---@field stop_ms integer
---@field step2_bytes integer  the cut-over's last increment
---@field step2_ms integer
---@field snapshot string  the snapshot both sides have now (held as the next base)

---Move a volume this gateway owns to the peer `peer` (a `--peer` name): Flocker's two-phase push.
---Refused while a running container uses the volume, unless `stop` (then they are stopped for the
---cut-over, `stop_timeout` seconds each before being killed).
---@param name string
---@param peer string
---@param opts {stop: boolean|nil, stop_timeout: integer|nil}|nil
---@return luastrip.PushReport
function zfs.push(name, peer, opts) end

---@class luastrip.ReplicaRound
---@field volume string
---@field to string
---@field snapshot string  the repl-* snapshot sent
---@field bytes integer
---@field ms integer

---Make `host` the standby of a volume this gateway owns: the volume is sent to it every `every`
---seconds (default 30; at least 1), incrementally, as a `repl-*` snapshot. The first round runs
---before this returns. `host` nil stops the replication. Lost when the volume moves; a restarted
---gateway resumes it. When the owner's host is lost: `luastrip cluster forget`, then zfs.adopt on
---the standby.
---@param name string
---@param host string|nil
---@param opts {every: number|nil}|nil
---@return luastrip.ReplicaRound|nil
function zfs.replicate(name, host, opts) end

---Take a volume whose owner was forgotten (`luastrip cluster forget`), with this host's copy as
---the volume from now on (at the next epoch, writable). Refused while its owner is not forgotten;
---the copy must exist here (zfs.volume makes an empty one).
---@param name string
---@return luastrip.Volume
function zfs.adopt(name) end

---Bring a volume here: ask its owner to push it to this gateway, waiting at most `timeout`
---seconds (default 300). nil when it is already owned here (or by no one).
---@param name string
---@param opts {timeout: number|nil}|nil
---@return luastrip.PushReport|nil
function zfs.pull(name, opts) end

---@class luastrip.Allocation
---@field address string  "10.32.0.5/12"
---@field ip string  "10.32.0.5"
---@field network string  the Docker network of its subnet ("luastrip", "luastrip-10.2.1.0-24")
---@field claim? string  what the endpoint that is to have the address carries in its DriverOpts,
---under overlay.claim_option (dockerd is refused the address at start without it)

---@class luastrip.Network
---@field name string
---@field id string
---@field cidr string
---@field bridge string

---What overlay.allocate and overlay.attach take: a WEAVE_CIDR entry ("10.2.1.5/24", "ip:…",
---"net:10.2.1.0/24", "net:default"), `{ ip = "…" }`, `{ net = "…" }`, or nil (the default range).
---@alias luastrip.Want string|{ip: string}|{net: string}|nil

---The overlay helper (`luastrip serve --network-plugin NAME`). Every function waits without being
---charged to the hook's budget, and raises a clear error when no overlay is configured or an
---argument is bad. Owners are container names or IDs, or tokens from `overlay.new_owner()`.
overlay = {}

---The label naming the owner of a container's addresses: "luastrip.overlay.owner".
overlay.owner_label = "luastrip.overlay.owner"

---The endpoint option carrying the claim on an owner's address: "luastrip.overlay.claim". A create
---that fixes an allocated address (`EndpointsConfig[net].IPAMConfig.IPv4Address`) sets
---`EndpointsConfig[net].DriverOpts[overlay.claim_option] = allocation.claim`.
overlay.claim_option = "luastrip.overlay.claim"

---A fresh owner token ("ow-" and 16 hex digits).
---@return string
function overlay.new_owner() end

---The label naming a container's overlay identity explicitly: "luastrip.overlay.identity".
overlay.identity_label = "luastrip.overlay.identity"

---The identity of a container created with `labels` and named `name` (the create's ?name=):
---"label:V" (overlay.identity_label), "compose:PROJECT:SERVICE:N" (compose's labels, not for
---one-off `docker-compose run` containers), "name:NAME", or nil. As an owner, an identity's
---address follows it: the same identity created on any host gets it back.
---@param labels table|nil
---@param name? string
---@return string|nil
function overlay.identity(labels, name) end

---@class luastrip.HeldAddress
---@field identity string  "name:db"
---@field address string  "10.32.0.5"
---@field pool string  "10.32.0.0/12"
---@field host string  where its container was removed
---@field left_s integer  seconds until it is free

---Identities' addresses held after their containers were removed (for `overlay.hold_s()`).
---@return luastrip.HeldAddress[]
function overlay.held() end

---How long this host holds an identity's address after its container is removed
---(`--overlay-hold-s`).
---@return integer
function overlay.hold_s() end

---The Docker network of the overlay driver for `cidr` (default --overlay-cidr), created if missing.
---@param opts? {name?: string, cidr?: string, bridge?: string}
---@return luastrip.Network
function overlay.network(opts) end

---An address for `owner`, kept until released (its network exists on return).
---@param owner string
---@param want? luastrip.Want
---@return string address  "10.32.0.5/12"
---@return luastrip.Allocation
function overlay.allocate(owner, want) end

---What a container (or owner) holds.
---@param container string
---@return luastrip.Allocation[]
function overlay.addresses(container) end

---Release everything a container (or owner) holds.
---@param container string
---@return luastrip.Allocation[] released
function overlay.release(container) end

---Allocate (or reuse) an address and connect the container to its network now.
---@param container string
---@param want? luastrip.Want
---@return string address
---@return luastrip.Allocation
function overlay.attach(container, want) end

---Disconnect the container and release the address (all of them when `addr` is nil).
---@param container string
---@param addr? string
---@return luastrip.Allocation[] detached
function overlay.detach(container, addr) end
