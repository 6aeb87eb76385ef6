#!/usr/bin/env python3
"""A Powerstrip adapter (protocol v1) in plain Python: labels every container created through it.

    python3 label_adapter.py [PORT]      # default 9000, listens on 127.0.0.1

It works unchanged behind Powerstrip and behind luastrip (see adapters.yml beside it).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Adapter(BaseHTTPRequestHandler):
    def do_POST(self):
        hook = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        request = hook["ClientRequest"]
        if hook["Type"] == "pre-hook":
            if request.get("Body"):
                body = json.loads(request["Body"])
                if not isinstance(body.get("Labels"), dict):
                    body["Labels"] = {}
                body["Labels"]["example.adapter"] = "label_adapter.py"
                request["Body"] = json.dumps(body)
            reply = {"PowerstripProtocolVersion": 1, "ModifiedClientRequest": request}
        else:
            reply = {"PowerstripProtocolVersion": 1, "ModifiedServerResponse": hook["ServerResponse"]}
        out = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        sys.stderr.write("label_adapter: " + fmt % args + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    server = ThreadingHTTPServer(("127.0.0.1", port), Adapter)
    print(f"label_adapter listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()
