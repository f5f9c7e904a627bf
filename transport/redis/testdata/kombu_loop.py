"""A Kombu pidbox client that keeps calling, for failover tests.

usage: kombu_loop.py URL TIMEOUT

Broadcasts ping (fanout, json) over and over, each round on a fresh
connection so that Sentinel names the current master, and prints one JSON
line per round: {"t": start, "end": end (unix times), "replies": [...]} or
{"t": ..., "end": ..., "error": "..."}. Runs until SIGTERM.
"""
import json
import signal
import sys
import time

from kombu.pidbox import Mailbox
from kombu_url import connection

url, timeout = sys.argv[1], float(sys.argv[2])
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
mailbox = Mailbox("celery", type="fanout", serializer="json", accept=["json"])
while not stop:
    start = time.time()
    try:
        with connection(url) as conn:
            replies = mailbox(conn)._broadcast("ping", {}, reply=True, timeout=timeout)
        print(json.dumps({"t": start, "end": time.time(), "replies": replies}), flush=True)
    except Exception as exc:  # the failover: report and go on
        print(json.dumps({"t": start, "end": time.time(), "error": repr(exc)}), flush=True)
        time.sleep(0.1)
