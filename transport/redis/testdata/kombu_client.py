"""A Kombu pidbox client for interop tests.

usage: kombu_client.py URL TYPE SERIALIZER REQUEST_JSON

REQUEST_JSON: {"method", "arguments", "destination", "pattern", "matcher",
"timeout", "limit", "namespace", "clock"}. Prints one JSON line:
{"replies": [...], "clock": value after, "elapsed": seconds}.
"""
import json
import sys
import time

from kombu_url import connection
from kombu.pidbox import Mailbox

url, type_, serializer, raw = sys.argv[1:5]
req = json.loads(raw)
mailbox = Mailbox(req.get("namespace", "celery"), type=type_, serializer=serializer,
                  accept=["json", "msgpack"])
if req.get("clock"):
    mailbox.clock.adjust(req["clock"])
with connection(url) as conn:
    bound = mailbox(conn)
    start = time.monotonic()
    replies = bound._broadcast(
        req["method"], req.get("arguments") or {}, req.get("destination"),
        reply=True, timeout=req.get("timeout", 1.0), limit=req.get("limit"),
        pattern=req.get("pattern"), matcher=req.get("matcher"))
    elapsed = time.monotonic() - start
print(json.dumps({"replies": replies, "clock": mailbox.clock.value, "elapsed": elapsed}), flush=True)
