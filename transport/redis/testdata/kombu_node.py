"""A Kombu pidbox node for interop tests.

usage: kombu_node.py URL HOSTNAME TYPE SERIALIZER [NAMESPACE]

Prints READY once it is subscribed, then serves until SIGTERM. Handlers:
echo(**kw) -> kw, fail() raises ValueError, clock() -> the node's clock,
ping() -> {"ok": "pong"}.
"""
import json
import signal
import socket
import sys

from kombu_url import connection
from kombu.pidbox import Mailbox

url, hostname, type_, serializer = sys.argv[1:5]
namespace = sys.argv[5] if len(sys.argv) > 5 else "celery"

stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

mailbox = Mailbox(namespace, type=type_, serializer=serializer, accept=["json", "msgpack"])
with connection(url) as conn:
    bound = mailbox(conn)
    node = bound.Node(hostname, state={})

    @node.handler
    def echo(state, **kwargs):
        return kwargs

    @node.handler
    def fail(state, **kwargs):
        raise ValueError("bad thing")

    @node.handler
    def clock(state, **kwargs):
        return {"clock": mailbox.clock.value}

    @node.handler
    def ping(state, **kwargs):
        return {"ok": "pong"}

    consumer = node.listen(channel=conn.channel())
    # Kombu binds the queue in listen() but subscribes (PSUBSCRIBE, or
    # BRPOP) only when it first drains: a broadcast before that would find
    # the binding and miss the node. Ready means subscribed.
    try:
        conn.drain_events(timeout=0.2)
    except socket.timeout:
        pass
    print("READY", flush=True)
    try:
        while not stop:
            try:
                conn.drain_events(timeout=0.2)
            except socket.timeout:
                pass
    finally:
        consumer.cancel()
        node.channel.close() if node.channel else None
print("STOPPED", flush=True)
