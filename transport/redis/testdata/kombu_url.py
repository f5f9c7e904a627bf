"""Kombu connections for the interop tests' URLs.

Kombu reads Sentinel settings from transport options, not from the URL:
master_name, and the sentinels' password as sentinel_kwargs. The Go
transport takes them as URL parameters (sentinel://...?master_name=NAME),
so the tests give both sides one URL and this moves the parameters.
"""
from urllib.parse import parse_qsl, urlencode

from kombu import Connection


def connection(url):
    if not url.startswith("sentinel://"):
        return Connection(url)
    base, _, query = url.partition("?")
    options, rest = {}, []
    for key, value in parse_qsl(query):
        if key == "master_name":
            options["master_name"] = value
        elif key == "sentinel_password":
            options.setdefault("sentinel_kwargs", {})["password"] = value
        else:
            rest.append((key, value))
    if rest:
        base += "?" + urlencode(rest)
    return Connection(base, transport_options=options)
