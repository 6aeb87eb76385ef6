//! Script limits and the gateway's own reliability: what a stuck or hostile script cannot take
//! from the gateway, through the real binary.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use support::{http_request, json_body, raw, wait_until, Daemon, Gateway};

/// A gateway whose only script spins in `GET /luastrip/spin` for as long as its budget allows,
/// inside a coroutine of its own, where it is not preempted: it holds its worker.
fn spinning(extra: &[&str]) -> Gateway {
    Gateway::with_script(
        r#"
        route.endpoint("GET /luastrip/spin", function(req)
          coroutine.wrap(function() while true do end end)()
        end)
        route.endpoint("GET /luastrip/ok", function(req) return { status = 200, json = { ok = true } } end)
        "#,
        extra,
    )
}

/// A spinning gateway with `threads` workers and a 3 s budget whose workers count as stuck after
/// 300 ms, with one client spinning in it, once the acceptor has seen the worker stuck.
fn one_worker_stuck(threads: &str) -> (Gateway, std::os::unix::net::UnixStream) {
    let gw = spinning(&[
        "--threads",
        threads,
        "--hook-timeout-ms",
        "3000",
        "--stuck-after-ms",
        "300",
    ]);
    let mut busy = support::connect(&gw.socket);
    busy.write_all(&http_request("GET", "/luastrip/spin", "", b""))
        .unwrap();
    wait_until(
        "the stuck worker shows in /metrics",
        Duration::from_secs(5),
        || gw.metric("luastrip_workers_stuck") == Some(1.0),
    );
    (gw, busy)
}

#[test]
fn a_busy_worker_leaves_the_control_socket_and_sigterm_working() {
    let mut gw = spinning(&["--threads", "1", "--hook-timeout-ms", "600000"]);
    let mut busy = support::connect(&gw.socket);
    busy.write_all(&http_request("GET", "/luastrip/spin", "", b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The control socket still answers: it does not run on the worker.
    let (status, calls) = gw.control("GET", "/calls", "");
    assert!(status.contains("200"), "{status}");
    assert!(calls.is_array());
    // SIGTERM ends the process within its grace period (5 s), whatever the script is doing.
    let t = Instant::now();
    let code = gw.terminate();
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(code, Some(0));
    assert!(!gw.socket.exists());
    assert!(gw
        .log_text()
        .contains("did not stop within the grace period"));
}

#[test]
fn a_stuck_worker_is_reported_and_gets_no_new_connections() {
    let (gw, mut busy) = one_worker_stuck("2");
    assert!(gw.log_text().contains("a worker is stuck"));
    // New calls all go to the worker that runs.
    for i in 0..6 {
        let resp = raw(&gw.socket, &http_request("GET", "/luastrip/ok", "", b""));
        assert!(resp.starts_with("HTTP/1.1 200"), "call {i}: {resp}");
    }
    // The spinning hook ends at its budget: the worker is back.
    let done = support::read_head(&mut busy);
    assert!(done.starts_with("HTTP/1.1 500"), "{done}");
    wait_until("the worker recovers", Duration::from_secs(5), || {
        gw.metric("luastrip_workers_stuck") == Some(0.0)
    });
    assert!(gw.log_text().contains("a stuck worker runs again"));
}

#[test]
fn with_every_worker_stuck_new_calls_get_a_clear_503() {
    let (gw, _busy) = one_worker_stuck("1");
    let resp = raw(&gw.socket, &http_request("GET", "/luastrip/ok", "", b""));
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(json_body(&resp)["message"]
        .as_str()
        .unwrap()
        .contains("every worker is stuck"));
}

#[test]
fn no_script_escapes_its_limits_and_the_gateway_keeps_serving() {
    let dir = support::temp_dir("escapes");
    std::fs::write(
        dir.join("a.lua"),
        r#"
        route.endpoint("GET /luastrip/pcall", function()
          while true do pcall(function() while true do end end) end
        end)
        route.endpoint("GET /luastrip/xpcall", function()
          while true do xpcall(function() while true do end end, function(e) return e end) end
        end)
        route.endpoint("GET /luastrip/wrap", function()
          coroutine.wrap(function() while true do end end)()
        end)
        route.endpoint("GET /luastrip/resume", function()
          while true do coroutine.resume(coroutine.create(function() while true do end end)) end
        end)
        route.endpoint("GET /luastrip/find", function()
          return { json = { at = string.rep("a", 40):find(string.rep("a-", 40) .. "b") } }
        end)
        route.endpoint("GET /luastrip/gsub", function()
          return { json = { s = (string.rep("a", 40)):gsub(string.rep("a-", 40) .. "b", "") } }
        end)
        route.endpoint("GET /luastrip/memory", function()
          while true do
            pcall(function()
              local kb = string.rep("x", 1024)
              local t = {} for i = 1, 1e9 do t[i] = string.rep(kb, 1024) .. i end
            end)
          end
        end)
        -- One script cannot weaken another's policy by changing what they share.
        route.endpoint("GET /luastrip/tamper", function()
          string.sub = function() return "" end
        end)
        route.endpoint("GET /luastrip/tamper-raw", function()
          rawset(string, "sub", function() return "" end)
        end)
        "#,
    )
    .unwrap();
    std::fs::write(
        dir.join("b.lua"),
        r#"
        route.endpoint("GET /luastrip/policy", function()
          return { json = { sub = ("privileged"):sub(1, 4) } }
        end)
        "#,
    )
    .unwrap();
    let gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", dir.to_str().unwrap(), "--vm-memory-mb", "32"],
    );
    for (path, why) in [
        ("/luastrip/pcall", "time budget"),
        ("/luastrip/xpcall", "time budget"),
        ("/luastrip/wrap", "time budget"),
        ("/luastrip/resume", "time budget"),
        ("/luastrip/find", "time budget"),
        ("/luastrip/gsub", "time budget"),
        // The VM's cap, or the rule that ends a hook holding more than half of it for long.
        ("/luastrip/memory", "memory cap"),
        ("/luastrip/tamper", "read-only"),
        ("/luastrip/tamper-raw", "read-only"),
    ] {
        let t = Instant::now();
        let resp = raw(&gw.socket, &http_request("GET", path, "", b""));
        assert!(resp.starts_with("HTTP/1.1 500"), "{path}: {resp}");
        let msg = json_body(&resp)["message"].as_str().unwrap().to_string();
        assert!(msg.contains(why), "{path}: {msg}");
        assert!(msg.contains("a.lua:"), "{path}: {msg}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            t.elapsed()
        );
    }
    let resp = raw(
        &gw.socket,
        &http_request("GET", "/luastrip/policy", "", b""),
    );
    assert_eq!(json_body(&resp)["sub"], "priv", "{resp}");
    support::run_ok(gw.docker().arg("version"));
}
