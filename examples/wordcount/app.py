#!/usr/bin/env python3
"""wordcount: a Hot Topic function in plain Python (standard library only).

Each event on the topic arrives as an HTTP POST from the sidecar; the body is
the event's payload. Answering 2xx acknowledges the event. Nothing here knows
about NATS: it is an ordinary web app listening on $PORT.
"""
import collections
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        text = self.rfile.read(length).decode("utf-8", errors="replace")
        words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
        words = [w for w in words if w]
        top = collections.Counter(words).most_common(3)
        event = self.headers.get("ce-id", "-")
        attempt = self.headers.get("Hottopic-Delivery", "1")
        print(f"event {event} (delivery {attempt}): {len(words)} words, top {top}", flush=True)
        body = json.dumps({"event": event, "words": len(words), "top": top}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # one line per event is printed above


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"wordcount listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
