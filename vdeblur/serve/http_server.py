"""The HTTP/REST endpoint: the KServe v2 protocol with Triton's binary tensor data extension.

Routes (model names URL-quoted; ``/versions/1`` may follow a model name):
``GET /v2/health/live``, ``GET /v2/health/ready`` (no token needed: health probes), ``GET /v2``,
``GET /v2/models/<m>``, ``GET /v2/models/<m>/ready``, ``GET /v2/models/<m>/config``,
``POST /v2/models/<m>/infer``, ``GET /metrics`` (Prometheus text).

An infer request is a JSON header, optionally followed by binary tensor data (its length in the
``Inference-Header-Content-Length`` header; each binary input says its ``binary_data_size``); gzip
or deflate request bodies (``Content-Encoding``) are accepted. One request, one response: FRAME_OUT
holds the n >= 0 outputs that became ready with this request, stacked ([n, H, W, 3]; absent when n
is 0), with the parameters ``sequence_id``, ``frame_index`` (of the first) and ``frame_count``;
binary when the request asks for binary output (``binary_data_output`` or the output's
``binary_data``), else a JSON ``data`` list. Errors answer ``{"error": "..."}`` with 400, 401, 404,
413, 429, 500 or 503.
"""

from __future__ import annotations

import json
import re
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import numpy as np

from vdeblur.errors import ServiceError, UsageError
from vdeblur.serve.metrics import CONTENT_TYPE
from vdeblur.serve.protocol import DATATYPE, MAX_SIDE, OUTPUT, InferRequest, parse_request
from vdeblur.serve.sequences import Output
from vdeblur.serve.service import Service

_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/config|/infer)?/?$")
MAX_HEADER = 1 << 20  # the JSON part of a request
MAX_BODY = MAX_HEADER + MAX_SIDE * MAX_SIDE * 3


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def parse_infer(model: str, body: bytes, header_length: str | None) -> InferRequest:
    """An infer request body -> a validated request (ServiceError INVALID_ARGUMENT otherwise)."""
    try:
        hlen = len(body) if header_length is None else int(header_length)
    except ValueError:
        raise ServiceError(f"request: Inference-Header-Content-Length is {header_length!r}. "
                           "Expected an integer.") from None
    if not 0 < hlen <= len(body) or hlen > MAX_HEADER:
        raise ServiceError(f"request: Inference-Header-Content-Length {hlen} does not fit a body of {len(body)} "
                           "bytes. Expected the length of the JSON header.")
    try:
        head = json.loads(body[:hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ServiceError(f"request: the JSON header does not parse ({e}). Expected a KServe v2 request.") from e
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list):
        raise ServiceError("request: the JSON header has no 'inputs' list. Expected a KServe v2 request.")
    params = head.get("parameters") or {}
    if not isinstance(params, dict):
        raise ServiceError("request: 'parameters' is not an object.")
    inputs, offset = [], hlen
    for t in head["inputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("shape"), list):
            raise ServiceError("request: an input has no 'shape' list. Expected {name, datatype, shape, ...}.")
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in t["shape"]):
            raise ServiceError(f"request: input shape {t['shape']} holds non-integers.")
        size = (t.get("parameters") or {}).get("binary_data_size")
        data = values = None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise ServiceError(f"request: input {t.get('name')!r} has binary_data_size {size!r}, but "
                                   f"{len(body) - offset} bytes follow. Expected the size of its binary data.")
            data = memoryview(body)[offset:offset + size]
            offset += size
        else:
            values = t.get("data")
            if isinstance(values, list) and values and isinstance(values[0], list):  # nested rows: flatten
                values = np.asarray(values).ravel().tolist()
        inputs.append((str(t.get("name")), str(t.get("datatype")), t["shape"], data, values))
    if offset != len(body):
        raise ServiceError(f"request: {len(body) - offset} bytes follow the binary inputs. Expected none.")
    outputs = head.get("outputs")
    names, binary = None, bool(params.get("binary_data_output", False))
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise ServiceError("request: 'outputs' is not a list of objects.")
        names = [str(o.get("name")) for o in outputs]
        binary = binary or any((o.get("parameters") or {}).get("binary_data", False) for o in outputs)
    return parse_request(model, inputs, params, str(head.get("id", "")), names, binary)


def infer_response(req: InferRequest, outputs: list[Output]) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary data follows) of an infer answer."""
    params: dict[str, Any] = {"frame_count": len(outputs)}
    if req.sequence_id is not None:
        params["sequence_id"] = req.sequence_id
    head: dict[str, Any] = {"model_name": req.model, "model_version": "1", "parameters": params, "outputs": []}
    if req.request_id:
        head["id"] = req.request_id
    raw = b""
    if outputs:
        params["frame_index"] = outputs[0][0]
        frames = np.stack([f for _, f in outputs])
        out: dict[str, Any] = {"name": OUTPUT, "datatype": DATATYPE, "shape": list(frames.shape)}
        if req.binary_output:
            raw = frames.tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
        else:
            out["data"] = frames.ravel().tolist()
        head["outputs"].append(out)
    header = _json(head)
    return (header + raw, len(header)) if raw else (header, None)


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
        disable_nagle_algorithm = True  # else small answers wait ~40 ms for a delayed ACK
        server_version = "vdeblur"
        timeout = 300  # an idle keep-alive connection frees its thread after this

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet; metrics count requests
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json",
                  extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _error(self, e: ServiceError) -> None:
            self._send(e.http_status, _json({"error": str(e)}))

        def _read_body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                raise ServiceError("request: no Content-Length. Expected a body with its length (no chunking).")
            n = int(length)
            if n > MAX_BODY:
                self.close_connection = True  # the body is not read: the connection cannot be reused
                raise ServiceError(f"request: a body of {n} bytes. Expected at most {MAX_BODY}.")
            body = self.rfile.read(n)
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding in ("gzip", "deflate"):
                try:
                    body = zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
                except zlib.error as e:
                    raise ServiceError(f"request: the {encoding} body does not decompress ({e}).") from e
            elif encoding not in ("", "identity"):
                raise ServiceError(f"request: Content-Encoding {encoding!r}. Expected gzip, deflate or none.")
            return body

        def _route(self, method: str) -> None:
            path = self.path.split("?", 1)[0]
            body = self._read_body() if method == "POST" else b""  # read fully before any answer
            if path in ("/v2/health/live", "/v2/health/ready"):
                ok = path.endswith("live") or service.ready
                self._send(200 if ok else 503, b"")
                return
            m = _MODEL.match(path)
            model = unquote(m.group(1)) if m else None
            service.authorize(self.headers.get("Authorization"), model if model in service.models else None)
            if path in ("/v2", "/v2/") and method == "GET":
                self._send(200, _json(service.server_metadata()))
            elif path == "/metrics" and method == "GET":
                self._send(200, service.metrics.render().encode(), CONTENT_TYPE)
            elif m and model is not None:
                version, action = unquote(m.group(2) or ""), m.group(3) or ""
                if action == "/infer" and method == "POST":
                    self._infer(model, version, body)
                elif action == "/ready" and method == "GET":
                    self._send(200 if service.model_ready(model, version) else 400, b"")
                elif action == "/config" and method == "GET":
                    self._send(200, _json(service.model_config_json(model, version)))
                elif action == "" and method == "GET":
                    self._send(200, _json(service.model_metadata(model, version)))
                else:
                    raise ServiceError(f"{method} {path}: not a route of this server.", "NOT_FOUND")
            else:
                raise ServiceError(f"{method} {path}: not a route of this server.", "NOT_FOUND")

        def _infer(self, model: str, version: str, body: bytes) -> None:
            service.model_metadata(model, version)  # NOT_FOUND for an unknown model or version
            try:
                req = parse_infer(model, body, self.headers.get("Inference-Header-Content-Length"))
            except ServiceError as e:
                service.refuse(model, e)
                raise
            arrived = service.admit(model)
            outputs = service.infer(req, arrived)
            payload, hlen = infer_response(req, outputs)
            extra = {"Inference-Header-Content-Length": str(hlen)} if hlen is not None else {}
            self._send(200, payload, "application/octet-stream" if hlen is not None else "application/json", extra)

        def _handle(self, method: str) -> None:
            try:
                self._route(method)
            except ServiceError as e:
                self._error(e)
            except Exception as e:  # noqa: BLE001 - answer, never drop the connection without a word
                self._error(ServiceError(f"server: internal error ({type(e).__name__}: {e}).", "INTERNAL"))

        def do_GET(self) -> None:  # noqa: N802 - http.server's names
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

    return Handler


class HttpServer:
    """ThreadingHTTPServer on its own thread: ``start()`` binds and returns the port; ``stop()``."""

    def __init__(self, service: Service, host: str, port: int) -> None:
        self.service, self.host, self.port = service, host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), make_handler(self.service))
        except OSError as e:
            raise UsageError(f"--http-port {self.port}: cannot listen on {self.host}:{self.port} ({e.strerror}). "
                             "Expected a free port (0 picks one).") from e
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="vdeblur-http", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
