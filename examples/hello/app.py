"""Baton's example app: a tiny web service to deploy, roll back and break.

It listens on $PORT, answers /health, and says which release it is.
Tell it to misbehave through its environment (see baton.toml):
  STARTUP_DELAY_MS=3000  wait that long before listening (a slow boot)
  FAIL_HEALTH=1          answer /health with 503 (a bad release)
  FAIL_PERCENT=20        answer that share of the other requests with 500
                         (a release that passes its checks, then fails users)
  FAIL_AFTER_MS=30000    … only once it has run that long
  DELAY_MS=300           answer every request but /health that much later (a slow release)
/slow?ms=2000 answers after that many milliseconds (a long request).
/page is an HTML page that includes Baton's live-update script (with
[proxy] live_updates = true it says when a new version is live).
"""

import itertools
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MESSAGE = "Hello from Baton's example app!"
RELEASE = os.environ.get("BATON_RELEASE", "unknown")[:12]
FAIL_HEALTH = os.environ.get("FAIL_HEALTH") == "1"
FAIL_PERCENT = int(os.environ.get("FAIL_PERCENT", "0"))
FAIL_AFTER = int(os.environ.get("FAIL_AFTER_MS", "0")) / 1000
STARTED = time.monotonic()
DELAY = int(os.environ.get("DELAY_MS", "0")) / 1000
# Every hundred requests, exactly FAIL_PERCENT fail, spread out.
COUNTER = itertools.count()
COUNTER_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            if FAIL_HEALTH:
                return self.reply(503, "unhealthy on purpose (FAIL_HEALTH=1)\n")
            return self.reply(200, "ok\n")
        if DELAY:
            time.sleep(DELAY)
        if FAIL_PERCENT and time.monotonic() - STARTED >= FAIL_AFTER:
            with COUNTER_LOCK:
                n = next(COUNTER)
            if (n * 37) % 100 < FAIL_PERCENT:
                return self.reply(500, f"failing on purpose (FAIL_PERCENT={FAIL_PERCENT})\nrelease: {RELEASE}\n")
        if url.path == "/page":
            return self.reply(
                200,
                f"<!doctype html><meta charset=utf-8><title>hello</title><h1>{MESSAGE}</h1>"
                f"<p>release {RELEASE}</p><script src=\"/_baton/live.js\" defer></script>\n",
                "text/html; charset=utf-8",
            )
        if url.path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
        self.reply(200, f"{MESSAGE}\nrelease: {RELEASE}\npath: {url.path}\n")

    def reply(self, status, text, content_type="text/plain; charset=utf-8"):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # one line per request would drown the log


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    port = int(os.environ["PORT"])
    delay = int(os.environ.get("STARTUP_DELAY_MS", "0"))
    if delay:
        print(f"starting slowly: waiting {delay} ms", flush=True)
        time.sleep(delay / 1000)
    server = Server(("127.0.0.1", port), Handler)
    print(f"release {RELEASE} listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
