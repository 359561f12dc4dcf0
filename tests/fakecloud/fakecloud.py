#!/usr/bin/python3
"""fakecloud: a local stand-in for OpenAI, Azure OpenAI, AWS Bedrock, Google
Vertex AI and Anthropic, for promptfs's integration tests and demo.

Each provider checks its own authentication and request format, answers
deterministically (`echo: <last user message>`), and misbehaves on request
when the prompt carries `[[fault:...]]` directives. See README.md."""

import argparse
import collections
import datetime
import hashlib
import http
import json
import os
import re
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faults  # noqa: E402
import googleauth  # noqa: E402
from common import (Answer, BadRequest, Reject, chunk_text, endless_chunks, jbody,  # noqa: E402
                    load_json_object, make_answer, rand_id)
from p_anthropic import Anthropic, new_message_id  # noqa: E402
from p_bedrock import Bedrock  # noqa: E402
from p_openai import OpenAI, Azure  # noqa: E402
from p_vertex import Vertex  # noqa: E402

MAX_BODY = 64 * 1024 * 1024
SILENCE_LIMIT = 600.0

OPENAI, AZURE, BEDROCK, VERTEX, ANTHROPIC = OpenAI(), Azure(), Bedrock(), Vertex(), Anthropic()

# Order matters: Azure deployments paths also end in /chat/completions.
ROUTES = [
    (re.compile(r"^(?P<prefix>.*)/openai/deployments/(?P<deployment>[^/]+)/chat/completions$"), AZURE),
    (re.compile(r"^(?P<prefix>.*)/chat/completions$"), OPENAI),
    (re.compile(r"^(?P<prefix>.*)/model/(?P<model>[^/]+)/(?P<op>converse|converse-stream)$"), BEDROCK),
    (re.compile(r"^(?P<prefix>.*)/(?P<version>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/"
                r"(?P<location>[^/]+)/publishers/google/models/(?P<model>[^/:%]+)(?::|%3[Aa])"
                r"(?P<method>generateContent|streamGenerateContent)$"), VERTEX),
    (re.compile(r"^(?P<prefix>.*)/v1/messages$"), ANTHROPIC),
]


class ClientGone(Exception):
    """The peer went away (or the server is stopping): stop answering."""


class BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------------------
# counters

class Stats:
    def __init__(self):
        self._lock = threading.Lock()
        self.inflight = 0
        self._zero()

    def _zero(self):
        self.requests = 0
        self.by_path = {}
        self.by_prompt = {}
        self.by_provider = {}
        self.by_status = {}
        self.by_fault = {}
        self.tokens_issued = 0
        self.max_inflight = self.inflight  # requests still running keep counting
        self.completed = {}  # sha256 of the last user message -> answers sent whole

    def reset(self):
        with self._lock:
            self._zero()

    def begin(self, path):
        with self._lock:
            self.requests += 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def end(self, outcome):
        with self._lock:
            self.inflight -= 1
            key = str(outcome.status)
            self.by_status[key] = self.by_status.get(key, 0) + 1
            if outcome.provider:
                self.by_provider[outcome.provider] = self.by_provider.get(outcome.provider, 0) + 1
            for name in outcome.faults:
                self.by_fault[name] = self.by_fault.get(name, 0) + 1

    def prompt(self, digest):
        with self._lock:
            self.by_prompt[digest] = self.by_prompt.get(digest, 0) + 1

    def complete(self, digest):
        """One answer to this prompt text went out whole (`GET /_completions`)."""
        with self._lock:
            self.completed[digest] = self.completed.get(digest, 0) + 1

    def completions(self):
        with self._lock:
            return dict(self.completed)

    def token_issued(self):
        with self._lock:
            self.tokens_issued += 1

    def snapshot(self):
        with self._lock:
            return {"requests": self.requests, "by_path": dict(self.by_path),
                    "by_prompt": dict(self.by_prompt), "inflight": self.inflight,
                    "max_inflight": self.max_inflight, "tokens_issued": self.tokens_issued,
                    "by_provider": dict(self.by_provider), "by_status": dict(self.by_status),
                    "by_fault": dict(self.by_fault)}


class LastRequests:
    """The last valid API request of each provider and of each prompt text
    (`GET /_last`), so that tests can check what a client actually sent."""

    PROMPTS_KEPT = 4096

    def __init__(self):
        self._lock = threading.Lock()
        self._zero()

    def _zero(self):
        self.by_provider = {}
        self.by_prompt = collections.OrderedDict()

    def reset(self):
        with self._lock:
            self._zero()

    def record(self, provider, digest, path, model, body):
        entry = {"provider": provider, "path": path, "model": model, "prompt": digest,
                 "body": body}
        with self._lock:
            self.by_provider[provider] = entry
            self.by_prompt.pop(digest, None)
            self.by_prompt[digest] = entry
            while len(self.by_prompt) > self.PROMPTS_KEPT:
                self.by_prompt.popitem(last=False)

    def find(self, params):
        with self._lock:
            if "prompt" in params:
                entry = self.by_prompt.get(params["prompt"])
                if entry is not None and params.get("provider") not in (None, entry["provider"]):
                    entry = None
                return entry
            if "provider" in params:
                return self.by_provider.get(params["provider"])
            return None


class RequestLog:
    """Every API and /token request seen since the start or the last
    `/_reset` (`GET /_requests`): when it arrived and ended, where it went,
    how it was answered, so that tests can assert attempts, the gaps
    between them and which deployments were called. The last KEPT stay."""

    KEPT = 100000

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = collections.deque(maxlen=self.KEPT)
        self._seq = 0

    def reset(self):
        with self._lock:
            self._entries.clear()

    def add(self, entry):
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)

    def find(self, params):
        """The entries matching every filter given: provider (comma list),
        model, path (substring), prompt, status, since (arrival, Unix time)."""
        since = float(params["since"]) if params.get("since") else None
        providers = params["provider"].split(",") if params.get("provider") else None
        with self._lock:
            entries = list(self._entries)
        found = []
        for e in entries:
            if providers and e["provider"] not in providers:
                continue
            if params.get("model") and e["model"] != params["model"]:
                continue
            if params.get("path") and params["path"] not in e["path"]:
                continue
            if params.get("prompt") and e["prompt"] != params["prompt"]:
                continue
            if params.get("status") and str(e["status"]) != params["status"]:
                continue
            if since is not None and e["t"] < since:
                continue
            found.append(e)
        return found


class Outcome:
    """What happened to one request, for the log and the counters."""

    def __init__(self):
        self.status = "-"
        self.provider = None
        self.faults = []
        self.model = None
        self.prompt = None
        self.rules = []


class Exchange:
    """One API request as the provider modules see it."""

    def __init__(self, handler, path, query, match, provider):
        self.cfg = handler.server.cfg
        self.path = path
        self.query = query
        self.params = {k: v[0] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}
        self.headers = handler.headers
        self.header_pairs = list(handler.headers.items())
        self.match = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
        self.body = b""
        self.started = time.monotonic()
        self.created = int(time.time())
        self.model = self.match.get("model") or self.match.get("deployment")
        self.region = None
        self.request_id = provider.new_request_id()
        self.completion_id = "chatcmpl-" + rand_id(29)
        self.message_id = new_message_id()
        self.response_id = rand_id(22)


# ----------------------------------------------------------------------------------------
# HTTP handling

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakecloud"
    sys_version = ""
    timeout = 900

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    # ----- plumbing -------------------------------------------------------------------
    def dispatch(self, method):
        self.pending_delay = 0.0
        self.pending_gate = None
        self.fragment = None
        path, _, query = self.path.partition("?")
        if path in ("/_stats", "/_reset", "/_last", "/_open", "/_completions", "/_faults",
                    "/_requests"):
            return self.control(path, query, method)
        srv = self.server
        outcome = Outcome()
        self.outcome = outcome
        started = time.monotonic()
        arrived = time.time()
        srv.stats.begin(path)
        try:
            self.route(method, path, query)
        except ClientGone:
            self.close_connection = True
            if outcome.status == "-":
                outcome.status = "client-gone"
        except Exception as e:  # a bug in the fake: say so loudly, keep serving others
            self.close_connection = True
            outcome.status = "crash"
            srv.log_line("%s %s internal error: %r" % (method, path, e))
            traceback.print_exc()
        finally:
            srv.stats.end(outcome)
            ms = (time.monotonic() - started) * 1000
            srv.requests.add({
                "t": arrived, "t_end": arrived + ms / 1000, "method": method, "path": path,
                "provider": outcome.provider, "model": outcome.model, "prompt": outcome.prompt,
                "status": outcome.status, "faults": list(outcome.faults),
                "rules": list(outcome.rules), "ms": round(ms, 3)})
            srv.log_line("%s %s %s fault=%s provider=%s ms=%d" % (
                method, path, outcome.status, ",".join(outcome.faults) or "-",
                outcome.provider or "-", ms))

    def route(self, method, path, query):
        if path == "/token":
            return self.token(method)
        for pattern, provider in ROUTES:
            m = pattern.match(path)
            if m:
                return self.api(method, path, query, provider, m)
        self.read_body_quietly()
        self.send_simple(404, {"Content-Type": "application/json"},
                         jbody({"error": {"code": 404, "message": "no such endpoint: %s" % path}}))

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise BodyError(400, "bad chunked encoding")
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise BodyError(413, "request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BodyError(400, "bad Content-Length")
        if n < 0 or n > MAX_BODY:
            raise BodyError(413, "request body too large")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ClientGone()
        return data

    def read_body_quietly(self):
        try:
            return self.read_body()
        except BodyError:
            self.close_connection = True
            return b""

    def client_gone(self):
        sock = self.connection
        try:
            poller = select.poll()  # not select(): descriptors may exceed FD_SETSIZE
            poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(0):
                return False
            if isinstance(sock, ssl.SSLSocket):
                return True  # nothing but close_notify or EOF is expected mid-answer
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def pause(self, seconds):
        """Sleep, but give up as soon as the client leaves or the server stops."""
        end = time.monotonic() + seconds
        stopping = self.server.stopping
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if stopping.wait(min(left, 0.1)) or self.client_gone():
                raise ClientGone()

    def wait_gate(self, name):
        """Hold the answer until the gate is opened, the client leaves or
        the server stops (at most SILENCE_LIMIT)."""
        gate = self.server.gate(name)
        end = time.monotonic() + SILENCE_LIMIT
        while not gate.wait(0.1):
            if time.monotonic() > end or self.server.stopping.is_set() or self.client_gone():
                raise ClientGone()
        # a client that left between two looks must not get an answer
        # counted as sent whole
        if self.client_gone():
            raise ClientGone()

    def write(self, data):
        if self.pending_gate is not None:
            name, self.pending_gate = self.pending_gate, None
            self.wait_gate(name)
        if self.pending_delay > 0:
            delay, self.pending_delay = self.pending_delay, 0.0
            self.pause(delay)
        try:
            self.wfile.write(data)
        except (OSError, ValueError):
            raise ClientGone()

    def head(self, status, headers, length=None, chunked=False, close=False):
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = {529: "Site Overloaded"}.get(status, "Unknown")
        lines = ["HTTP/1.1 %d %s" % (status, reason),
                 "Date: %s" % self.date_time_string(), "Server: fakecloud"]
        for name, value in headers.items():
            lines.append("%s: %s" % (name, value))
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append("Content-Length: %d" % (length or 0))
        if close or self.close_connection:
            self.close_connection = True
            lines.append("Connection: close")
        else:
            lines.append("Connection: keep-alive")
        self.outcome.status = status
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_simple(self, status, headers, body, close=False):
        self.write(self.head(status, headers, len(body), close=close) + body)

    def write_chunk(self, data):
        if not data:
            return
        step = self.fragment or len(data)
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            self.write(b"%x\r\n%s\r\n" % (len(piece), piece))

    def end_chunks(self):
        self.write(b"0\r\n\r\n")

    def abort(self):
        """Drop the connection in the middle of an answer (FIN, no terminator)."""
        self.close_connection = True
        self.outcome.status = "%s-cut" % self.outcome.status

    def reset_connection(self):
        """Close with TCP RST (SO_LINGER 0) and no HTTP answer at all."""
        self.close_connection = True
        self.outcome.status = "reset"
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.rfile.close()
        except OSError:
            pass

    def hold_silent(self):
        self.outcome.status = "silence"
        try:
            self.pause(SILENCE_LIMIT)
        except ClientGone:
            pass
        self.close_connection = True

    # ----- control endpoints ----------------------------------------------------------
    def control(self, path, query="", method="GET"):
        self.outcome = Outcome()
        raw = self.read_body_quietly()
        srv = self.server
        if path == "/_reset":
            srv.stats.reset()
            srv.faults.reset()
            srv.token_faults.reset()
            srv.last.reset()
            srv.requests.reset()
            srv.close_gates()
            body = jbody({"ok": True})
        elif path == "/_faults":
            try:
                result = self.runtime_faults(method, query, raw)
            except BadRequest as e:
                return self.send_simple(400, {"Content-Type": "application/json",
                                              "Cache-Control": "no-store"},
                                        jbody({"error": e.message}))
            body = jbody(result)
        elif path == "/_requests":
            params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
            try:
                found = srv.requests.find(params)
            except ValueError:
                return self.send_simple(400, {"Content-Type": "application/json",
                                              "Cache-Control": "no-store"},
                                        jbody({"error": "since must be a number"}))
            body = jbody({"requests": found})
        elif path == "/_last":
            params = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
            entry = srv.last.find(params)
            if entry is None:
                return self.send_simple(404, {"Content-Type": "application/json",
                                              "Cache-Control": "no-store"},
                                        jbody({"error": "no such request"}))
            body = jbody(entry)
        elif path == "/_open":
            name = urllib.parse.parse_qs(query).get("gate", [""])[0]
            srv.gate(name).set()
            body = jbody({"ok": True, "gate": name})
        elif path == "/_completions":
            body = jbody(srv.stats.completions())
        else:
            body = jbody(srv.stats.snapshot())
        self.send_simple(200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body)

    def runtime_faults(self, method, query, raw):
        """`/_faults`: GET lists the rules; DELETE (or POST with clear=all)
        removes them all; POST sets the faults of one selector, from the
        query (provider=, model=, path=, fault=... repeated) or a JSON body
        {"provider", "model", "path", "faults": [...]}; no fault removes
        that selector's rule."""
        book = self.server.faults
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if method == "DELETE" or (method == "POST" and params.get("clear") == ["all"]):
            book.clear_rules()
            return {"ok": True, "rules": []}
        if method != "POST":
            return {"rules": book.rules()}
        if raw.strip():
            try:
                spec = json.loads(raw)
            except ValueError:
                raise BadRequest("fakecloud: /_faults body is not JSON")
            if not isinstance(spec, dict) or not isinstance(spec.get("faults", []), list):
                raise BadRequest("fakecloud: /_faults body must be an object with a faults list")
        else:
            spec = {k: v[0] for k, v in params.items() if k != "fault"}
            spec["faults"] = params.get("fault", [])
        directives = [d for text in spec.get("faults", []) if str(text).strip()
                      for d in faults.parse_spec(str(text))]
        rule = book.set_rule(spec.get("provider"), spec.get("model"), spec.get("path"), directives)
        return {"ok": True, "rule": rule.describe() if rule else None, "rules": book.rules()}

    # ----- OAuth token endpoint -------------------------------------------------------
    def token(self, method):
        srv = self.server
        self.outcome.provider = "token"
        self.pending_delay = srv.cfg.latency
        body = self.read_body_quietly()
        if method != "POST":
            return self.send_simple(405, {"Content-Type": "application/json", "Allow": "POST"},
                                    jbody({"error": "invalid_request",
                                           "error_description": "use POST"}))
        plan = srv.token_faults.plan("token", [], "token", "/token")
        self.outcome.faults = plan.names
        self.pending_delay = plan.first_byte_delay(srv.cfg.latency)
        name = plan.main.name if plan.main else None
        if name == "reset":
            return self.reset_connection()
        if name == "silence":
            return self.hold_silent()
        if name == "garbage":
            return self.send_garbage()
        if name == "status":
            code = plan.main.get("code", 503)
            err = "temporarily_unavailable" if code >= 500 else "invalid_request"
            headers = {"Content-Type": "application/json"}
            headers.update(retry_headers(plan.main))
            return self.send_simple(code, headers, jbody({
                "error": err, "error_description": plan.main.get("message") or "fault injected"}))
        try:
            answer = srv.cfg.token_authority.exchange(body)
        except googleauth.GrantError as e:
            return self.send_simple(e.status, {"Content-Type": "application/json"},
                                    jbody({"error": e.error, "error_description": e.description}))
        srv.stats.token_issued()
        self.send_simple(200, {"Content-Type": "application/json; charset=utf-8",
                               "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
                               "Pragma": "no-cache"}, jbody(answer))

    # ----- provider APIs --------------------------------------------------------------
    def api(self, method, path, query, prov, match):
        srv = self.server
        cfg = srv.cfg
        rq = Exchange(self, path, query, match, prov)
        self.outcome.provider = prov.name
        self.outcome.model = rq.model
        self.pending_delay = cfg.latency
        try:
            rq.body = self.read_body()
        except BodyError as e:
            self.close_connection = True
            return self.send_error_answer(rq, prov, e.status, str(e))
        if method != "POST":
            return self.send_error_answer(rq, prov, 405, "Method %s is not allowed here." % method)
        try:
            prov.authenticate(rq)
        except Reject as e:
            return self.send_error_answer(rq, prov, e.status, e.message, kind=e.kind, extra=e.headers)
        try:
            obj = load_json_object(rq.body)
            chat = prov.parse(rq, obj)
            directives = faults.parse_prompt(chat.last_user)
        except BadRequest as e:
            kind = "SerializationException" if (e.kind == "json" and prov is BEDROCK) else None
            return self.send_error_answer(rq, prov, 400, e.message, kind=kind, param=e.param)
        if cfg.known_models is not None and chat.model not in cfg.known_models:
            return self.unknown_model(rq, prov, chat)
        digest = hashlib.sha256(chat.last_user.encode()).hexdigest()
        self.outcome.model = chat.model
        self.outcome.prompt = digest
        srv.stats.prompt(digest)
        srv.last.record(prov.name, digest, path, chat.model, obj)
        plan = srv.faults.plan(digest, directives, prov.name, path, chat.model)
        self.outcome.faults = plan.names
        self.outcome.rules = plan.rules
        self.execute(rq, prov, chat, plan)
        if plan.main is None:
            # a normal answer, every byte of it written (a client that left
            # raises ClientGone instead): what GET /_completions counts, the
            # answers a real provider would have produced and billed
            srv.stats.complete(digest)

    def send_error_answer(self, rq, prov, status, message, kind=None, param=None, extra=None):
        status, headers, body = prov.error(rq, status, message, kind=kind, param=param)
        headers["Content-Type"] = "application/json"
        headers.update(extra or {})
        self.send_simple(status, headers, body)

    def unknown_model(self, rq, prov, chat):
        if prov is BEDROCK:
            return self.send_error_answer(rq, prov, 400, "The provided model identifier is invalid.")
        if prov is VERTEX:
            return self.send_error_answer(rq, prov, 404, (
                "Publisher Model `projects/%s/locations/%s/publishers/google/models/%s` was not "
                "found or your project does not have access to it.")
                % (rq.match["project"], rq.match["location"], chat.model))
        if prov is ANTHROPIC:
            return self.send_error_answer(rq, prov, 404, "model: %s" % chat.model)
        if prov is AZURE:
            return self.send_error_answer(rq, prov, 404, None)
        return self.send_error_answer(rq, prov, 404, (
            "The model `%s` does not exist or you do not have access to it." % chat.model),
            kind="model_not_found")

    def send_garbage(self):
        body = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
                b"<body><h1>Bad Gateway</h1><p>The upstream server is unavailable.</p></body></html>\n")
        self.send_simple(200, {"Content-Type": "text/html; charset=utf-8"}, body)

    def execute(self, rq, prov, chat, plan):
        cfg = self.server.cfg
        self.pending_delay = plan.first_byte_delay(cfg.latency)
        self.pending_gate = plan.gate
        self.fragment = plan.fragment
        main = plan.main
        name = main.name if main else None
        if name == "reset":
            return self.reset_connection()
        if name == "silence":
            return self.hold_silent()
        if name == "garbage":
            return self.send_garbage()
        if name == "status":
            status, headers, body = prov.error(rq, main.get("code", 503), main.get("message"),
                                               fault=main)
            headers["Content-Type"] = "application/json"
            headers.update(retry_headers(main, prov.name))
            return self.send_simple(status, headers, body)
        if name == "content_filter":
            status, headers, body = prov.content_filter_error(rq)
            headers["Content-Type"] = "application/json"
            return self.send_simple(status, headers, body)
        ans = make_answer(chat, plan.long)
        ans.finish_word = plan.finish
        if chat.stream:
            self.send_stream(rq, prov, chat, ans, plan)
        else:
            self.send_whole(rq, prov, chat, ans, plan)

    def send_stream(self, rq, prov, chat, ans, plan):
        size = self.server.cfg.chunk_bytes
        main = plan.main
        name = main.name if main else None
        total = len(ans.text.encode())
        after = min(main.get("after", size), total) if main is not None else 0
        stall = plan.stall
        stall_after = stall.get("after", size) if stall is not None else 0
        breaks = [after, stall_after]
        headers = prov.headers(rq)
        headers["Content-Type"] = prov.stream_type
        headers["Cache-Control"] = "no-cache"
        closing = name in ("cut", "no_done", "inband_error", "malformed", "endless")
        self.write(self.head(200, headers, chunked=True, close=closing))
        if name == "endless":
            for kind, data, _ in prov.stream(rq, chat, ans, []):
                if kind == "head":
                    self.write_chunk(data)
            for chunk in endless_chunks(ans.text, size):
                self.write_chunk(prov.text_piece(rq, chat, chunk))
        sent = 0
        broken = False
        for kind, data, ntext in prov.stream(rq, chat, ans, chunk_text(ans.text, size, breaks)):
            if kind != "head":
                if stall is not None and sent >= stall_after:
                    self.pause(stall.get("seconds", 5.0))
                    stall = None
                if name == "cut" and sent >= after:
                    return self.abort()
                if name == "inband_error" and sent >= after:
                    self.write_chunk(prov.inband_error(rq, main.get("code", prov.inband_status),
                                                       main.get("message")))
                    break
                if name == "no_done" and kind == "end":
                    continue
                if name == "malformed" and not broken and sent >= after:
                    data = prov.break_piece(data)
                    broken = True
            self.write_chunk(data)
            sent += ntext
        if name == "cut":
            return self.abort()
        if stall is not None:
            self.pause(stall.get("seconds", 5.0))
        self.end_chunks()

    def send_whole(self, rq, prov, chat, ans, plan):
        main = plan.main
        name = main.name if main else None
        headers = prov.headers(rq)
        headers["Content-Type"] = "application/json"
        if name == "inband_error":
            _, _, body = prov.error(rq, main.get("code", prov.inband_status), main.get("message"))
            return self.send_simple(200, headers, body)
        body = prov.response(rq, chat, ans)
        if name == "malformed":
            body = body.rstrip()[:-2]
        if name == "endless":
            marker = Answer("\x00", False, ans.input_tokens, ans.output_tokens)
            before = prov.response(rq, chat, marker).partition(b"\\u0000")[0]
            self.write(self.head(200, headers, chunked=True, close=True))
            self.write_chunk(before)
            for chunk in endless_chunks(ans.text, self.server.cfg.chunk_bytes):
                self.write_chunk(json.dumps(chunk, ensure_ascii=False)[1:-1].encode())
        if name in ("cut", "no_done"):
            cut = main.get("after", len(body) // 2) if name == "cut" else len(body) // 2
            self.write(self.head(200, headers, len(body), close=True))
            self.write(body[:min(cut, len(body) - 1)])
            return self.abort()
        if plan.stall is not None:
            split = min(plan.stall.get("after", len(body) // 2), len(body))
            self.write(self.head(200, headers, len(body)))
            self.write(body[:split])
            self.pause(plan.stall.get("seconds", 5.0))
            return self.write(body[split:])
        if self.fragment:
            self.write(self.head(200, headers, len(body)))
            for i in range(0, len(body), self.fragment):
                self.write(body[i:i + self.fragment])
            return
        self.send_simple(200, headers, body)


def go_duration(seconds):
    """A duration as OpenAI's reset headers write it: "2s", "1.5s", "1m30s", "120ms"."""
    if seconds < 1:
        return "%dms" % round(seconds * 1000)
    minutes, rest = divmod(seconds, 60)
    text = ("%g" % rest) + "s"
    return ("%dm" % minutes + text) if minutes else text


def retry_headers(fault, provider=None):
    headers = {}
    if fault.get("retry_after") is not None:
        headers["retry-after"] = fault.get("retry_after_text")
    if fault.get("retry_after_ms") is not None:
        headers["retry-after-ms"] = str(fault.get("retry_after_ms"))
    if fault.get("should_retry") is not None:
        headers["x-should-retry"] = fault.get("should_retry")
    reset = fault.get("reset_after")
    if reset is not None and provider in ("openai", "azure"):
        headers["x-ratelimit-remaining-requests"] = "0"
        headers["x-ratelimit-reset-requests"] = go_duration(reset)
    elif reset is not None and provider == "anthropic":
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=reset)
        headers["anthropic-ratelimit-requests-remaining"] = "0"
        headers["anthropic-ratelimit-requests-reset"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return headers


# ----------------------------------------------------------------------------------------
# server

class FakeCloudServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, cfg):
        self.cfg = cfg
        self.stats = Stats()
        self.last = LastRequests()
        self.requests = RequestLog()
        self.faults = faults.FaultBook(cfg.fault_defaults)
        self.token_faults = faults.FaultBook(cfg.token_faults)
        self.stopping = threading.Event()
        self._gates = {}
        self._gates_lock = threading.Lock()
        self.ssl_context = None
        self._log = open(cfg.log, "a", buffering=1) if cfg.log else None
        self._log_lock = threading.Lock()
        if cfg.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cfg.tls[0], cfg.tls[1])
            ctx.set_alpn_protocols(["http/1.1"])
            self.ssl_context = ctx
        super().__init__(address, Handler)

    def gate(self, name):
        """The Event of the gate NAME, made closed on first use."""
        with self._gates_lock:
            return self._gates.setdefault(name, threading.Event())

    def close_gates(self):
        with self._gates_lock:
            self._gates.clear()

    def server_bind(self):
        # skip HTTPServer's reverse DNS lookup of the address
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port

    def finish_request(self, request, client_address):
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if self.ssl_context is None:
            return super().finish_request(request, client_address)
        request.settimeout(30)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return None
        try:
            conn.settimeout(None)
            Handler(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass
        return None

    def handle_error(self, request, client_address):
        pass  # a client that vanished mid-request is not news

    def close_log(self):
        if self._log is not None:
            with self._log_lock:
                self._log.close()
                self._log = None

    def log_line(self, text):
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        with self._log_lock:
            if self._log is not None:
                self._log.write("%sZ %s\n" % (stamp, text))


# ----------------------------------------------------------------------------------------
# command line

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="fakecloud.py",
        description="Local fake of the OpenAI, Azure OpenAI, Bedrock, Vertex AI and Anthropic APIs.")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (default)")
    g.add_argument("--port-file", metavar="FILE", help="also write the chosen port to FILE")
    g.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with this PEM cert and key")
    g.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                   help="delay before the first byte of every answer (default 0)")
    g.add_argument("--chunk-bytes", type=int, default=7, metavar="N",
                   help="answer text bytes per streamed chunk (default 7)")
    g.add_argument("--log", metavar="FILE", help="append one line per request to FILE")
    g.add_argument("--fault-default", action="append", default=[], metavar="DIRECTIVE",
                   help="apply a fault directive to every request (repeatable)")
    g.add_argument("--token-fault", action="append", default=[], metavar="DIRECTIVE",
                   help="apply a fault directive to the /token endpoint (repeatable)")
    g.add_argument("--known-models", metavar="LIST",
                   help="comma-separated model ids/deployments; others get the provider's 404")
    g = p.add_argument_group("credentials the fake expects (omit to accept anything)")
    g.add_argument("--openai-key", metavar="KEY")
    g.add_argument("--azure-key", metavar="KEY")
    g.add_argument("--azure-token", metavar="TOKEN")
    g.add_argument("--anthropic-key", metavar="KEY")
    g.add_argument("--aws-access-key", metavar="AKID")
    g.add_argument("--aws-secret-key", metavar="SECRET")
    g.add_argument("--aws-session-token", metavar="TOKEN")
    g.add_argument("--aws-region", metavar="REGION", help="region the SigV4 credential scope must name")
    g.add_argument("--aws-bearer-token", metavar="TOKEN", help="Bedrock API key accepted as Authorization: Bearer")
    g.add_argument("--aws-max-skew", type=float, default=300.0, metavar="SECONDS",
                   help="allowed X-Amz-Date clock difference (default 300)")
    g.add_argument("--vertex-access-token", metavar="TOKEN", help="a static bearer token Vertex accepts")
    g.add_argument("--vertex-sa-public-key", metavar="PEM_FILE",
                   help="public key verifying the service account's JWT assertions")
    g.add_argument("--vertex-sa-email", metavar="EMAIL", help="expected JWT iss (default: from --vertex-sa-json)")
    g.add_argument("--vertex-sa-key-id", metavar="KID", help="expected JWT kid (default: from --vertex-sa-json, else any)")
    g.add_argument("--vertex-sa-json", metavar="FILE",
                   help="service-account key file: sets public key, email and key id at once")
    g.add_argument("--update-sa-token-uri", action="store_true",
                   help="rewrite token_uri in --vertex-sa-json to this server's token URI")
    g.add_argument("--vertex-token-uri", metavar="URI", help="expected JWT aud (default http(s)://127.0.0.1:PORT/token)")
    g.add_argument("--vertex-token-ttl", type=int, default=3600, metavar="SECONDS",
                   help="lifetime of issued access tokens (default 3600)")
    g.add_argument("--vertex-project", metavar="PROJECT", help="project id Vertex paths must name (default: any)")
    g = p.add_argument_group("service-account key helper")
    g.add_argument("--make-sa-key", metavar="DIR", help="write DIR/sa.json (0600) and DIR/sa-public.pem, then exit")
    g.add_argument("--token-uri", metavar="URI", help="token_uri to put in sa.json")
    g.add_argument("--sa-email", metavar="EMAIL", default=googleauth.DEFAULT_EMAIL, help="client_email to put in sa.json")
    args = p.parse_args(argv)
    if (args.aws_access_key is None) != (args.aws_secret_key is None):
        p.error("--aws-access-key and --aws-secret-key go together")
    if args.chunk_bytes < 1:
        p.error("--chunk-bytes must be at least 1")
    if args.update_sa_token_uri and not args.vertex_sa_json:
        p.error("--update-sa-token-uri needs --vertex-sa-json")
    if args.vertex_sa_public_key and not (args.vertex_sa_email or args.vertex_sa_json):
        p.error("--vertex-sa-public-key needs --vertex-sa-email")
    return args


def build_config(args):
    cfg = args
    try:
        cfg.fault_defaults = [d for spec in args.fault_default for d in faults.parse_spec(spec)]
        cfg.token_faults = [d for spec in args.token_fault for d in faults.parse_spec(spec)]
    except BadRequest as e:
        raise SystemExit("fakecloud: %s" % e.message)
    cfg.known_models = (set(m.strip() for m in args.known_models.split(",") if m.strip())
                        if args.known_models else None)
    return cfg


def setup_vertex(cfg, port):
    scheme = "https" if cfg.tls else "http"
    token_uri = cfg.vertex_token_uri or "%s://127.0.0.1:%d/token" % (scheme, port)
    public, email, key_id = None, cfg.vertex_sa_email, cfg.vertex_sa_key_id
    if cfg.vertex_sa_json:
        public, sa_email, sa_kid, info = googleauth.load_sa_json(cfg.vertex_sa_json)
        email = email or sa_email
        key_id = key_id or sa_kid
        if cfg.update_sa_token_uri:
            info["token_uri"] = token_uri
            googleauth.write_private_json(cfg.vertex_sa_json, info)
    if cfg.vertex_sa_public_key:
        with open(cfg.vertex_sa_public_key, "rb") as f:
            public = f.read()
    cfg.vertex_token_uri = token_uri
    cfg.token_authority = googleauth.TokenAuthority(
        public_key_pem=public, email=email, key_id=key_id, token_uri=token_uri,
        ttl=cfg.vertex_token_ttl, static_token=cfg.vertex_access_token)


def write_port_file(path, port):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.make_sa_key:
        sa, pub = googleauth.make_sa_key(args.make_sa_key, args.token_uri or "http://127.0.0.1:0/token",
                                         email=args.sa_email)
        print("SA_JSON %s" % sa)
        print("SA_PUBLIC_KEY %s" % pub)
        return 0
    cfg = build_config(args)
    threading.stack_size(512 * 1024)
    server = FakeCloudServer((cfg.host, cfg.port), cfg)
    port = server.server_address[1]
    setup_vertex(cfg, port)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    loop.start()
    if cfg.port_file:
        write_port_file(cfg.port_file, port)
    print("PORT %d" % port, flush=True)
    while not stop.wait(1.0):
        pass
    server.stopping.set()
    server.shutdown()
    server.server_close()
    server.close_log()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    # connection threads may still be mid-answer; do not let interpreter teardown race them
    os._exit(status)
