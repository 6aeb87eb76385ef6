-- An audit log: one line per state-changing call, with how long the daemon took.
route.pre("* /**", function(req)
  req.ctx.started = os.clock()
end)

route.post("* /**", function(req, res)
  if req.method ~= "GET" and req.method ~= "HEAD" then
    log.info("audit", {
      method = req.method,
      path = req.path,
      status = res.status,
      streaming = res.streaming,
      user_agent = req.headers["user-agent"],
    })
  end
end)
