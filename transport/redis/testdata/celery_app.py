"""A minimal Celery app for interop tests; the broker URL comes from
PIDBOX_BROKER."""
import os

from celery import Celery

app = Celery("interop", broker=os.environ["PIDBOX_BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    accept_content=["json", "msgpack"],
    event_serializer=os.environ.get("PIDBOX_EVENT_SERIALIZER", "json"),
)


@app.task
def add(x, y):
    return x + y
