"""A Celery app with message signing on (Celery's auth serializer), for
interop tests. The broker URL comes from PIDBOX_BROKER; the key, the
certificate and the store from PIDBOX_SECURITY_KEY, _CERTIFICATE and
_CERT_STORE, as Celery's security_key, security_certificate and
security_cert_store."""
import os

from celery import Celery

app = Celery("secure", broker=os.environ["PIDBOX_BROKER"])
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="auth",
    accept_content=["auth"],
    result_serializer="json",
    result_accept_content=["json"],
    security_key=os.environ["PIDBOX_SECURITY_KEY"],
    security_certificate=os.environ["PIDBOX_SECURITY_CERTIFICATE"],
    security_cert_store=os.environ["PIDBOX_SECURITY_CERT_STORE"],
)
app.setup_security()


@app.task
def add(x, y):
    return x + y
