"""The Kombu side of the differential suite (internal/kombudiff).

usage:
  kombu_peer.py node URL SPECS_JSON
      SPECS_JSON: [{"namespace", "type", "serializer", "accept", "hostname",
      "any_method"}].
      Serves one Kombu pidbox Node per spec on one connection. Prints READY
      once every node consumes, then one line per handler call:
      RECV {"node", "method", "args": DESCRIPTION}.
      Handlers: echo(**kw) returns kw; fail() raises ValueError('bad thing');
      with any_method, every other method is recorded and returns {"ok": "recorded"}.
  kombu_peer.py client
      Reads one JSON command per line from stdin and prints one JSON result
      line per command: {"ok": true, "replies": [DESCRIPTION, ...]} or
      {"ok": false, "error": "TypeName: text"}.
      Command: {"url", "namespace", "type", "serializer", "accept",
      "method", "args": {name: python expression}, "destination",
      "pattern", "matcher", "reply", "limit", "timeout"}.

A DESCRIPTION names a value's Python type and its exact value, so Go can
compare what each side saw: ["null"], ["bool", b], ["int", "digits"],
["float", "hex of the IEEE-754 bits"] (or ["float", "nan"]), ["str", s],
["bytes", "hex"], ["list", [...]], ["dict", [[key, value], ...]] sorted by
key, ["py", "typename", "repr"] for anything else.
"""
import json
import math
import signal
import socket
import struct
import sys
import traceback

from kombu import Connection
from kombu.pidbox import Mailbox


def describe(v):
    if v is None:
        return ["null"]
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        if math.isnan(v):
            return ["float", "nan"]
        return ["float", struct.pack(">d", v).hex()]
    if isinstance(v, str):
        return ["str", v]
    if isinstance(v, (bytes, bytearray)):
        return ["bytes", bytes(v).hex()]
    if isinstance(v, (list, tuple)):
        return ["list", [describe(x) for x in v]]
    if isinstance(v, dict):
        items = [[describe(k), describe(x)] for k, x in v.items()]
        items.sort(key=lambda kv: sort_key(kv[0]))
        return ["dict", items]
    return ["py", type(v).__name__, repr(v)]


def sort_key(d):
    # The same order as Go's: type name, NUL, then the value's text.
    if len(d) < 2:
        return d[0]
    v = d[1]
    if isinstance(v, bool):
        v = "true" if v else "false"
    return d[0] + "\x00" + (v if isinstance(v, str) else json.dumps(v))


class AnyMethod(dict):
    """Handlers that record any method, as Celery's commands would run."""

    def __init__(self, hostname):
        super().__init__()
        self.hostname = hostname

    def __missing__(self, method):
        def record(state, **kwargs):
            sys.stdout.write("RECV " + json.dumps({"node": self.hostname, "method": method, "args": describe(kwargs)}) + "\n")
            sys.stdout.flush()
            return {"ok": "recorded"}
        return record


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(url, specs):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    with Connection(url) as conn:
        consumers = []
        for spec in specs:
            mailbox = Mailbox(spec["namespace"], type=spec["type"],
                              serializer=spec["serializer"], accept=spec["accept"])
            node = mailbox(conn).Node(spec["hostname"], state={})
            hostname = spec["hostname"]

            def echo(state, _host=hostname, **kwargs):
                sys.stdout.write("RECV " + json.dumps({"node": _host, "method": "echo", "args": describe(kwargs)}) + "\n")
                sys.stdout.flush()
                return kwargs

            def fail(state, _host=hostname, **kwargs):
                sys.stdout.write("RECV " + json.dumps({"node": _host, "method": "fail", "args": describe(kwargs)}) + "\n")
                sys.stdout.flush()
                raise ValueError("bad thing")

            if spec.get("any_method"):
                node.handlers = AnyMethod(hostname)
            else:
                node.handlers = {"echo": echo, "fail": fail}
            consumers.append(node.listen(channel=conn.channel()))
        print("READY", flush=True)
        while not stop:
            try:
                conn.drain_events(timeout=0.2)
            except socket.timeout:
                pass
        for c in consumers:
            c.cancel()


def client():
    conns, mailboxes = {}, {}
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            url = cmd["url"]
            if url not in conns:
                conns[url] = Connection(url)
            key = (url, cmd["namespace"], cmd["type"], cmd["serializer"], tuple(cmd["accept"]))
            if key not in mailboxes:
                mailboxes[key] = Mailbox(cmd["namespace"], type=cmd["type"], serializer=cmd["serializer"],
                                         accept=cmd["accept"])(conns[url])
            bound = mailboxes[key]
            args = {k: eval(expr, {"__builtins__": {"float": float}}) for k, expr in (cmd.get("args") or {}).items()}
            replies = bound._broadcast(
                cmd["method"], args, cmd.get("destination"),
                reply=cmd.get("reply", True), timeout=cmd.get("timeout", 2.0), limit=cmd.get("limit"),
                pattern=cmd.get("pattern"), matcher=cmd.get("matcher"))
            emit({"ok": True, "replies": [describe(r) for r in (replies or [])]})
        except Exception as exc:  # reported to the Go side, which decides
            emit({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "trace": traceback.format_exc()})
    for c in conns.values():
        c.release()


if __name__ == "__main__":
    if sys.argv[1] == "node":
        serve(sys.argv[2], json.loads(sys.argv[3]))
    else:
        client()
