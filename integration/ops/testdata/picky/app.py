#!/usr/bin/env python3
"""picky: a function that refuses events starting with "bad" (422, with a reason
in the body) until the file named by PICKY_FIXED exists; with ACCEPT_ALL set it
takes everything. One line per event: "event <ce-id> <body> -> <status>"."""
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", errors="replace")
        fixed = os.environ.get("ACCEPT_ALL") or os.path.exists(os.environ.get("PICKY_FIXED", "/nonexistent"))
        status = 422 if body.startswith("bad") and not fixed else 200
        print(f"event {self.headers.get('ce-id', '-')} {body} -> {status}", flush=True)
        answer = b"cannot parse " + body.encode() if status != 200 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("picky listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
