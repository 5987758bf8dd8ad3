#!/usr/bin/env python3
"""sensors: a Hot Topic function that takes events in batches (Python, standard library only).

With hottopic.io/batch-size set, the sidecar POSTs up to that many events at once in the
CloudEvents HTTP batch mode: Content-Type application/cloudevents-batch+json, a JSON array
of events in the JSON event format (`data` for JSON payloads, `data_base64` otherwise).

The answer, in AWS Lambda's shape so functions port over: any 2xx acknowledges every event
except those named in {"batchItemFailures": [{"itemIdentifier": "<ce id>"}]}; each of those
is retried on its own with backoff and dead-lettered after hottopic.io/max-deliver attempts.
Here a reading that is not JSON with a numeric "celsius" is such a failure.
"""
import base64
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reading(event):
    """The event's temperature, or None when the event is not a reading."""
    if "data" in event:
        data = event["data"]
    elif "data_base64" in event:
        try:
            data = json.loads(base64.b64decode(event["data_base64"]))
        except ValueError:
            return None
    else:
        return None
    if isinstance(data, dict) and isinstance(data.get("celsius"), (int, float)):
        return data["celsius"]
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("Content-Type", "").split(";")[0] != "application/cloudevents-batch+json":
            self.answer(400, {"error": "expected a batch: set hottopic.io/batch-size above 1"})
            return
        events = json.loads(body)
        failures, values = [], []
        for event in events:
            value = reading(event)
            if value is None:
                failures.append({"itemIdentifier": event["id"]})
            else:
                values.append(value)
        mean = sum(values) / len(values) if values else None
        print(f"batch of {len(events)} (delivery {self.headers.get('Hottopic-Delivery')}): "
              f"{len(values)} readings, mean {mean}, {len(failures)} failed", flush=True)
        self.answer(200, {"batchItemFailures": failures})

    def answer(self, status, obj):
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass  # one line per batch is printed above


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"sensors listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
