"""An in-memory Google Cloud Storage for tests: ``gs://`` paths without a network.

``with fake_gcs() as store:`` serves one in-memory object store (``store``: object name
``/bucket/path`` -> bytes) two ways, as GCS offers it to a real job:

- to ``etils.epath`` (``epath.Path("gs://bucket/x").write_text(...)``): fsspec's ``gcs``/``gs``
  protocols are bound to a ``MemoryFileSystem`` over the store;
- to tensorstore, which orbax uses for the arrays of a checkpoint: a local HTTP server speaking the
  subset of GCS's JSON API tensorstore calls (media download with byte ranges, media upload, object
  metadata, listing, delete, ``ifGenerationMatch`` preconditions), reached through
  ``TENSORSTORE_GCS_HTTP_URL`` with a test token (``GOOGLE_AUTH_TOKEN_FOR_TESTING``).

The bucket has a flat namespace (no hierarchical namespace), so orbax's check of that (a
``google-cloud-storage`` call) answers False. Object generations are derived from the content.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import fsspec
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry


class FakeGCSFileSystem(MemoryFileSystem):
    """fsspec's in-memory file system answering ``gs://bucket/x`` as ``/bucket/x``."""

    protocol = ("gs", "gcs")
    store: dict = {}  # its own store, not MemoryFileSystem's (the class attributes are shared)
    pseudo_dirs = [""]

    def __init__(self, *args, **kwargs):  # epath passes finalize_on_close=True for gcs
        super().__init__()

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return MemoryFileSystem._strip_protocol(path)

    def unstrip_protocol(self, name: str) -> str:
        return "gs://" + name.lstrip("/")


def _generation(data: bytes) -> int:
    """A positive generation number that changes when the content does (0 means "absent" to GCS)."""
    return (zlib.crc32(data) << 20) + len(data) % (1 << 20) + 1


def _meta(bucket: str, name: str, data: bytes) -> dict:
    g = str(_generation(data))
    return {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)), "generation": g,
            "metageneration": "1", "id": f"{bucket}/{name}/{g}", "updated": "2026-01-01T00:00:00.000Z"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fs: FakeGCSFileSystem
    lock: threading.Lock

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: bytes = b"", ctype: str = "application/json", headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj).encode())

    def _error(self, code: int, msg: str) -> None:
        self._json(code, {"error": {"code": code, "message": msg}})

    def _parse(self):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        parts = url.path.split("/")
        return parts, query

    def _key(self, bucket: str, name: str) -> str:
        return f"/{bucket}/{name}"

    def _get(self, key: str) -> bytes | None:
        obj = self.fs.store.get(key)
        return None if obj is None else bytes(obj.getbuffer())

    def _preconditions(self, query: dict, data: bytes | None) -> bool:
        current = 0 if data is None else _generation(data)
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != current:
            return False
        if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"]) == current:
            return False
        return True

    def do_GET(self):  # noqa: N802
        parts, query = self._parse()
        # /storage/v1/b/{bucket}/o[/{object}]
        if parts[1:4] != ["storage", "v1", "b"] or len(parts) < 6 or parts[5] != "o":
            return self._error(404, f"unsupported path {self.path}")
        bucket = parts[4]
        with self.lock:
            if len(parts) == 6 or parts[6] == "":  # list
                prefix = query.get("prefix", "")
                start, end = query.get("startOffset"), query.get("endOffset")
                items = []
                for key in sorted(self.fs.store):
                    if not key.startswith(f"/{bucket}/"):
                        continue
                    name = key[len(bucket) + 2:]
                    if not name.startswith(prefix) or (start and name < start) or (end and name >= end):
                        continue
                    items.append(_meta(bucket, name, self._get(key)))
                return self._json(200, {"kind": "storage#objects", "items": items})
            name = urllib.parse.unquote("/".join(parts[6:]))
            data = self._get(self._key(bucket, name))
            if data is None:
                return self._error(404, f"no such object {bucket}/{name}")
            if not self._preconditions(query, data):
                return self._send(304 if "ifGenerationNotMatch" in query else 412, b"")
            gen = str(_generation(data))
            if query.get("alt") != "media":
                return self._json(200, _meta(bucket, name, data))
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                a, _, b = rng[len("bytes="):].partition("-")
                if a == "":  # suffix range
                    lo, hi = max(0, len(data) - int(b)), len(data) - 1
                else:
                    lo, hi = int(a), (int(b) if b else len(data) - 1)
                hi = min(hi, len(data) - 1)
                if lo > hi and len(data):
                    return self._error(416, "range not satisfiable")
                return self._send(206, data[lo:hi + 1], "application/octet-stream",
                                  {"x-goog-generation": gen, "Content-Range": f"bytes {lo}-{hi}/{len(data)}"})
            return self._send(200, data, "application/octet-stream", {"x-goog-generation": gen})

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        parts, query = self._parse()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # /upload/storage/v1/b/{bucket}/o?uploadType=media&name=...
        if parts[1:5] != ["upload", "storage", "v1", "b"] or query.get("uploadType") != "media":
            return self._error(400, f"unsupported upload {self.path}")
        bucket, name = parts[5], query["name"]
        key = self._key(bucket, name)
        with self.lock:
            if not self._preconditions(query, self._get(key)):
                return self._error(412, "precondition failed")
            self.fs.pipe_file(key, body)
            return self._json(200, _meta(bucket, name, body))

    def do_DELETE(self):  # noqa: N802
        parts, query = self._parse()
        bucket, name = parts[4], urllib.parse.unquote("/".join(parts[6:]))
        key = self._key(bucket, name)
        with self.lock:
            data = self._get(key)
            if data is None:
                return self._error(404, "no such object")
            if not self._preconditions(query, data):
                return self._error(412, "precondition failed")
            self.fs.rm_file(key)
            return self._send(204)


@contextlib.contextmanager
def fake_gcs() -> Iterator[dict]:
    """Serve an empty in-memory GCS (module docstring) while the block runs; yields the store."""
    from etils.epath import backend
    from orbax.checkpoint._src.path import gcs_utils

    fs = FakeGCSFileSystem()
    fs.store.clear()
    FakeGCSFileSystem.pseudo_dirs[:] = [""]
    handler = type("Handler", (_Handler,), {"fs": fs, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    saved_env = {k: os.environ.get(k) for k in ("TENSORSTORE_GCS_HTTP_URL", "GOOGLE_AUTH_TOKEN_FOR_TESTING",
                                                "EPATH_USE_TF")}
    os.environ.update({"TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{server.server_address[1]}",
                       "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token", "EPATH_USE_TF": "false"})
    saved = {p: fsspec.registry.get(p) for p in FakeGCSFileSystem.protocol}
    for p in FakeGCSFileSystem.protocol:
        fsspec.register_implementation(p, FakeGCSFileSystem, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    hns = gcs_utils.is_hierarchical_namespace_enabled
    gcs_utils.is_hierarchical_namespace_enabled = lambda path: False  # a flat bucket (module docstring)
    try:
        yield fs.store
    finally:
        gcs_utils.is_hierarchical_namespace_enabled = hns
        server.shutdown()
        server.server_close()
        for p, impl in saved.items():
            if impl is None:
                _registry.pop(p, None)  # back to fsspec's lazily imported default (gcsfs)
            else:
                fsspec.register_implementation(p, impl, clobber=True)
        backend.fsspec_backend._get_filesystem.cache_clear()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fs.store.clear()
