"""A loopback stand-in for the KFP v2beta1 REST API: just enough for kfp.Client 2.17.

It keeps pipelines, versions, experiments, runs and recurring runs in memory and records
every request (method, path, query, headers, parsed body) so tests can assert what the
client really sent. Only binds 127.0.0.1.
"""
from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"


class KfpStandin:
    def __init__(self):
        self.requests: list[dict] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: list[dict] = []
        self.recurring_runs: list[dict] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def find(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    # -- routing -------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        q = {k: v[0] for k, v in query.items()}
        if path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/pipelines/upload" and method == "POST":
            pid = self._id("pipeline")
            p = {"pipeline_id": pid, "display_name": q.get("name"), "namespace": q.get("namespace", "")}
            self.pipelines[pid] = p
            self._add_version(pid, q.get("name"))
            return 200, p
        if path == f"{API}/pipelines/upload_version" and method == "POST":
            pid = q.get("pipelineid")
            if pid not in self.pipelines:
                return 404, {"error": f"pipeline {pid} not found", "code": 5}
            return 200, self._add_version(pid, q.get("name"))
        if path == f"{API}/pipelines" and method == "GET":
            found = [p for p in self.pipelines.values() if _matches(p, q.get("filter"))]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if path.startswith(f"{API}/pipelines/") and path.endswith("/versions") and method == "GET":
            pid = path.split("/")[-2]
            versions = list(reversed(self.versions.get(pid, [])))  # newest first, as sort_by asks
            return 200, {"pipeline_versions": versions[: int(q.get("page_size", 10))]}
        if path == f"{API}/experiments" and method == "GET":
            found = [e for e in self.experiments.values() if _matches(e, q.get("filter"))]
            return 200, {"experiments": found} if found else {}
        if path == f"{API}/experiments" and method == "POST":
            eid = self._id("experiment")
            e = {**body, "experiment_id": eid}
            self.experiments[eid] = e
            return 200, e
        if path == f"{API}/runs" and method == "POST":
            r = {**body, "run_id": self._id("run"), "state": "PENDING", "created_at": "2026-01-02T03:04:05Z"}
            self.runs.append(r)
            return 200, r
        if path == f"{API}/runs" and method == "GET":
            runs = [r for r in self.runs if q.get("experiment_id") in (None, r.get("experiment_id"))]
            return 200, {"runs": list(reversed(runs))} if runs else {}
        if path == f"{API}/recurringruns" and method == "POST":
            rr = {**body, "recurring_run_id": self._id("recurring")}
            self.recurring_runs.append(rr)
            return 200, rr
        return 404, {"error": f"stand-in has no route {method} {path}", "code": 5}

    def _add_version(self, pid: str, name: str) -> dict:
        v = {"pipeline_id": pid, "pipeline_version_id": self._id("version"), "display_name": name}
        self.versions.setdefault(pid, []).append(v)
        return v

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    body = _parse_multipart(ctype, raw)
                elif raw:
                    body = json.loads(raw)
                else:
                    body = None
                query = parse_qs(parts.query)
                with standin._lock:
                    standin.requests.append({"method": self.command, "path": parts.path, "query": query,
                                             "headers": dict(self.headers), "body": body})
                    status, payload = standin.handle(self.command, parts.path, query, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler


def _matches(obj: dict, flt: str | None) -> bool:
    if not flt:
        return True
    preds = json.loads(flt).get("predicates", [])
    return all(obj.get(p["key"]) == p.get("stringValue") for p in preds if p.get("operation") in ("EQUALS", 1))


def _parse_multipart(ctype: str, raw: bytes) -> dict:
    """Form fields of a multipart body: {name: {"filename": ..., "content": text}}."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
    out = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = {"filename": part.get_filename(),
                     "content": part.get_payload(decode=True).decode("utf-8", "replace")}
    return out
