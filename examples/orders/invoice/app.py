#!/usr/bin/env python3
"""invoice: the second function of the chain, in plain Python.

It consumes orders.enriched (the enrich function's answers) and writes an
invoice line. Answering 204 (no body) acknowledges the event and publishes
nothing further.
"""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        o = json.loads(self.rfile.read(length))
        print(
            f"invoice for order {o['order']}: {o['qty']} x {o['product']} @ {o['unit_price']:.2f}"
            f" + VAT {o['vat_rate']:.0%} = {o['total']:.2f} {o['currency']}",
            flush=True,
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"invoice listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
