//! Script limits and the gateway's own reliability (issue "security and reliability"): what a
//! stuck or hostile script cannot take from the gateway, through the real binary.

mod support;

use std::time::{Duration, Instant};

use support::{http_request, Daemon, Gateway};

#[test]
fn a_worker_stuck_in_c_code_leaves_the_control_socket_and_sigterm_working() {
    let path = support::temp_dir("stuck").join("s.lua");
    // Lua's pattern matcher backtracks in C, where no instruction budget can stop it.
    std::fs::write(
        &path,
        r#"
        route.endpoint("GET /luastrip/stuck", function(req)
          local s = string.rep("a", 40)
          return { status = 200, json = { found = s:find(string.rep("a-", 40) .. "b") } }
        end)
        "#,
    )
    .unwrap();
    let mut gw = Gateway::start_with(
        &Daemon::shared().socket,
        &["--scripts", path.to_str().unwrap(), "--threads", "1"],
    );
    let mut stuck = support::connect(&gw.socket);
    std::io::Write::write_all(&mut stuck, &http_request("GET", "/luastrip/stuck", "", b""))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The control socket still answers: it does not run on the worker.
    let (status, calls) = gw.control("GET", "/calls", "");
    assert!(status.contains("200"), "{status}");
    assert!(calls.is_array());
    // The listen socket still accepts (the call waits for the stuck worker, but is not refused).
    assert!(std::os::unix::net::UnixStream::connect(&gw.socket).is_ok());
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
