# A webhook receiver for `make loadtest`: answers every POST after 50 ms (a slow
# backend) and counts the events it took; GET answers the counts as JSON.
import http.server, json, sys, threading, time
count = 0; posts = 0; lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count, posts
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = len(json.loads(body)["events"])
        time.sleep(0.05)
        with lock:
            count += n; posts += 1
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        b = json.dumps({"events": count, "posts": posts}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
