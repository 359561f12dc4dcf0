#!/usr/bin/python3
"""Self-test of the fake cloud: starts fakecloud.py on a free port and talks
to it over HTTP like the daemon would. Run: tests/fakecloud/selftest.py"""

import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, HERE)

import common  # noqa: E402
import eventstream  # noqa: E402
import googleauth  # noqa: E402
import sigv4  # noqa: E402

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402

FAKE = os.path.join(HERE, "fakecloud.py")
OPENAI_KEY = "sk-selftest-openai"
AZURE_KEY = "azure-selftest-key"
AZURE_TOKEN = "azure-selftest-entra-token"
ANTHROPIC_KEY = "sk-ant-selftest"
AWS_AK = "AKIDSELFTEST"
AWS_SK = "selftest/secret+key"
AWS_TOKEN = "selftest-session-token"
VERTEX_STATIC = "ya29.static-selftest"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
VECTORS = os.path.join(HERE, "..", "..", "..", "shared", "vectors", "aws-sigv4")


def start_fake(extra, tmp):
    proc = subprocess.Popen([sys.executable, FAKE, "--port", "0"] + extra,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError("fakecloud did not start: %r %s" % (line, proc.stderr.read()))
    return proc, int(line.split()[1])


# ---------------------------------------------------------------------------------------
# an independent, minimal SigV4 signer (the client's side)

def _hm(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign_v4(method, host, wire_path, body, headers, *, ak, sk, region, service="bedrock",
            token=None, when=None):
    when = when or datetime.datetime.now(datetime.timezone.utc)
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz[:8]
    out = dict(headers)
    out["host"] = host
    out["x-amz-date"] = amz
    if token:
        out["x-amz-security-token"] = token
    names = sorted(k.lower() for k in out)
    lower = {k.lower(): str(v).strip() for k, v in out.items()}
    canon_headers = "".join("%s:%s\n" % (n, lower[n]) for n in names)
    # the wire path is already percent-encoded once; SigV4 encodes it again
    canon_uri = urllib.parse.quote(wire_path, safe="/-_.~")
    creq = "\n".join([method, canon_uri, "", canon_headers, ";".join(names),
                      hashlib.sha256(body).hexdigest()])
    scope = "%s/%s/%s/aws4_request" % (day, region, service)
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = _hm(_hm(_hm(_hm(("AWS4" + sk).encode(), day), region), service), "aws4_request")
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s" % (
        ak, scope, ";".join(names), sig)
    return out, sig


def b64u(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_jwt(key_pem, kid, claims, alg="RS256"):
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    signing_input = b64u(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode()) + "." + \
        b64u(json.dumps(claims).encode())
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64u(sig)


def parse_sse(raw):
    """[(event, data)] from an SSE body (any line terminator)."""
    text = raw.decode()
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        events.append((event, "\n".join(data)))
    return events


class FakeCloudTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fakecloud-selftest-")
        out = subprocess.run([sys.executable, FAKE, "--make-sa-key", cls.tmp], check=True,
                             capture_output=True, text=True).stdout
        assert "SA_JSON" in out
        cls.sa_path = os.path.join(cls.tmp, "sa.json")
        cls.log_path = os.path.join(cls.tmp, "fake.log")
        cls.proc, cls.port = start_fake([
            "--openai-key", OPENAI_KEY, "--azure-key", AZURE_KEY, "--azure-token", AZURE_TOKEN,
            "--anthropic-key", ANTHROPIC_KEY, "--aws-access-key", AWS_AK,
            "--aws-secret-key", AWS_SK, "--aws-region", "eu-central-1",
            "--vertex-sa-json", cls.sa_path, "--update-sa-token-uri",
            "--vertex-access-token", VERTEX_STATIC, "--log", cls.log_path,
            "--port-file", os.path.join(cls.tmp, "port")], cls.tmp)
        with open(cls.sa_path) as f:
            cls.sa = json.load(f)
        cls.host = "127.0.0.1:%d" % cls.port

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            rc = cls.proc.wait(10)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            rc = "timeout"
        cls.proc.stdout.close()
        cls.proc.stderr.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert rc == 0, "fakecloud exit status %r after SIGTERM" % rc

    # ----- helpers --------------------------------------------------------------------
    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def post(self, path, body, headers=None, timeout=10):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        c = self.conn(timeout)
        try:
            h = dict(headers or {})
            if not any(k.lower() == "content-type" for k in h):
                h["Content-Type"] = "application/json"
            c.request("POST", path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def stats(self):
        c = self.conn()
        c.request("GET", "/_stats")
        data = json.loads(c.getresponse().read())
        c.close()
        return data

    def openai(self, prompt, stream=False, key=OPENAI_KEY, **extra):
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}],
                "stream": stream}
        body.update(extra)
        return self.post("/v1/chat/completions", body, {"Authorization": "Bearer " + key})

    def openai_text(self, raw):
        text, done = [], False
        for _, data in parse_sse(raw):
            if data == "[DONE]":
                done = True
                continue
            obj = json.loads(data)
            for ch in obj["choices"]:
                text.append(ch.get("delta", {}).get("content") or "")
        return "".join(text), done

    def azure(self, prompt, stream=False, headers=None, version="2024-10-21", **extra):
        body = {"messages": [{"role": "user", "content": prompt}], "stream": stream}
        body.update(extra)
        path = "/openai/deployments/gpt-4o-prod/chat/completions"
        if version:
            path += "?api-version=" + version
        return self.post(path, body, headers if headers is not None else {"api-key": AZURE_KEY})

    def anthropic(self, prompt, stream=False, headers=None, **extra):
        body = {"model": "claude-sonnet-4-5", "max_tokens": 256,
                "messages": [{"role": "user", "content": prompt}], "stream": stream}
        body.update(extra)
        h = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
        if headers is not None:
            h = headers
        return self.post("/v1/messages", body, h)

    def bedrock(self, prompt, stream=False, model="anthropic.claude-3-haiku-20240307-v1:0",
                sk=AWS_SK, region="eu-central-1", token=None, when=None, body=None, tamper=False):
        op = "converse-stream" if stream else "converse"
        wire = "/model/%s/%s" % (urllib.parse.quote(model, safe="-._~"), op)
        if body is None:
            body = json.dumps({"messages": [{"role": "user", "content": [{"text": prompt}]}],
                               "inferenceConfig": {"maxTokens": 256}}).encode()
        headers, _ = sign_v4("POST", self.host, wire, body, {"content-type": "application/json"},
                             ak=AWS_AK, sk=sk, region=region, token=token, when=when)
        del headers["host"]  # http.client sends the same Host itself
        if tamper:
            body = body.replace(b"}", b" }", 1)
        return self.post(wire, body, headers)

    def vertex_token(self):
        now = int(time.time())
        jwt = make_jwt(self.sa["private_key"], self.sa["private_key_id"], {
            "iss": self.sa["client_email"], "aud": self.sa["token_uri"], "scope": CLOUD_PLATFORM,
            "iat": now, "exp": now + 3600})
        form = urllib.parse.urlencode({"grant_type": googleauth.GRANT_TYPE, "assertion": jwt})
        st, _, body = self.post("/token", form.encode(),
                                {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 200, body)
        return json.loads(body)["access_token"]

    def vertex(self, prompt, stream=False, token=VERTEX_STATIC, **gen):
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path = ("/v1/projects/acme/locations/europe-west4/publishers/google/models/"
                "gemini-2.0-flash:" + method)
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        if gen:
            body["generationConfig"] = gen
        headers = {"Authorization": "Bearer " + token} if token else {}
        return self.post(path, body, headers)

    # ----- pure functions -------------------------------------------------------------
    def test_chunking_never_splits_characters(self):
        text = "echo: añ€😀x"
        chunks = common.chunk_text(text, 3)
        self.assertEqual("".join(chunks), text)
        for c in chunks:
            self.assertLessEqual(len(c.encode()), 4)
        self.assertEqual(common.chunk_text("abcdefghij", 7, breaks=[3]), ["abc", "defghij"])
        self.assertEqual(common.chunk_text("😀", 1), ["😀"])

    def test_answer_rules(self):
        chat = common.Chat("m", [("user", "hi"), ("assistant", "yo"), ("user", "héllo")], "sys", 3, False)
        ans = common.make_answer(chat)
        self.assertEqual(ans.text, "[system: sys")  # 3 tokens = 12 bytes
        self.assertTrue(ans.truncated)
        self.assertEqual(ans.input_tokens, (2 + 2 + 6 + 3 + 3) // 4)
        chat = common.Chat("m", [("user", "€€€€€")], None, 3, False)
        self.assertEqual(common.make_answer(chat).text, "echo: €€")  # 12 bytes max, boundary kept

    def test_eventstream_reference_vectors(self):
        self.assertEqual(eventstream.encode_message([], b"").hex(), "000000100000000005c248eb7d98c8ff")
        msg = eventstream.event("contentBlockDelta",
                                b'{"contentBlockIndex":0,"delta":{"text":"Hi"},"p":"abcd"}')
        self.assertEqual(len(msg), 159)
        self.assertEqual(msg[8:12].hex(), "c37babff")
        self.assertEqual(msg[-4:].hex(), "f2ace5ff")

    def test_sigv4_worked_bedrock_example(self):
        body = (b'{"messages":[{"role":"user","content":[{"text":"Hello"}]}],'
                b'"inferenceConfig":{"maxTokens":64,"temperature":0.5}}')
        when = datetime.datetime(2015, 8, 30, 12, 36, 0, tzinfo=datetime.timezone.utc)
        wire = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        host = "bedrock-runtime.us-east-1.amazonaws.com"
        secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
        for token, expect in ((None, "9e49235b233d7416c24e7b270bcc1e16e0233ecd29a7a5308f4271e74718c869"),
                              ("EXAMPLESESSIONTOKEN",
                               "7e583c0539aa59020a5fa523b673f058433c99703bf00a8554c10ef3728389a9")):
            headers, sig = sign_v4("POST", host, wire, body, {"Content-Type": "application/json"},
                                   ak="AKIDEXAMPLE", sk=secret, region="us-east-1",
                                   token=token, when=when)
            self.assertEqual(sig, expect)
            # and the verifier accepts it at that moment
            sigv4.verify("POST", wire, "", list(headers.items()), body, access_key="AKIDEXAMPLE",
                         secret_key=secret, service="bedrock", region="us-east-1",
                         session_token=token, now=when)
        with self.assertRaises(sigv4.SigV4Error) as cm:
            sigv4.verify("POST", wire, "", list(headers.items()), body + b" ", access_key="AKIDEXAMPLE",
                         secret_key=secret, service="bedrock", session_token="EXAMPLESESSIONTOKEN",
                         now=when)
        self.assertEqual(cm.exception.kind, "InvalidSignatureException")

    def test_sigv4_official_vectors(self):
        if not os.path.isdir(VECTORS):
            self.skipTest("no SigV4 vectors beside the repository")
        checked = 0
        for case in sorted(os.listdir(VECTORS)):
            d = os.path.join(VECTORS, case)
            if not os.path.isdir(d):
                continue
            with open(os.path.join(d, "context.json")) as f:
                ctx = json.load(f)
            with open(os.path.join(d, "request.txt"), encoding="utf-8") as f:
                raw = f.read().replace("\r", "")
            with open(os.path.join(d, "header-canonical-request.txt"), encoding="utf-8") as f:
                expected = f.read()
            head, _, body = raw.partition("\n\n")
            lines = head.split("\n")
            method, rest = lines[0].split(" ", 1)
            target = rest.rsplit(" ", 1)[0]
            pairs = []
            for line in lines[1:]:
                if not line:
                    continue
                if line[0] in " \t":
                    pairs[-1] = (pairs[-1][0], pairs[-1][1] + "\n" + line)
                    continue
                name, _, value = line.partition(":")
                pairs.append((name, value))
            pairs.append(("X-Amz-Date", "20150830T123600Z"))
            payload = hashlib.sha256(body.encode()).hexdigest()
            if ctx.get("sign_body"):
                pairs.append(("x-amz-content-sha256", payload))
            creds = ctx["credentials"]
            if "token" in creds and not ctx.get("omit_session_token"):
                pairs.append(("X-Amz-Security-Token", creds["token"]))
            path, _, query = target.partition("?")
            creq = sigv4.canonical_request(method, path, query, pairs, sorted({n.lower() for n, _ in pairs}),
                                           payload, normalize=ctx["normalize"])
            self.assertEqual(creq, expected, case)
            checked += 1
        self.assertGreater(checked, 30)

    # ----- OpenAI ---------------------------------------------------------------------
    def test_openai_non_stream(self):
        st, h, body = self.openai("hello", max_completion_tokens=100,
                                  messages=[{"role": "system", "content": "terse"},
                                            {"role": "user", "content": "first"},
                                            {"role": "assistant", "content": "ok"},
                                            {"role": "user", "content": [{"type": "text", "text": "hello"}]}])
        self.assertEqual(st, 200, body)
        obj = json.loads(body)
        self.assertEqual(obj["choices"][0]["message"]["content"], "[system: terse] echo: hello")
        self.assertEqual(obj["choices"][0]["finish_reason"], "stop")
        self.assertEqual(obj["usage"]["prompt_tokens"], (5 + 5 + 2 + 5 + 3) // 4)
        self.assertEqual(obj["usage"]["completion_tokens"], (27 + 3) // 4)
        self.assertTrue(h["x-request-id"])

    def test_openai_stream_with_usage(self):
        st, h, body = self.openai("grüße aus köln", stream=True, stream_options={"include_usage": True})
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/event-stream"))
        events = parse_sse(body)
        self.assertEqual(events[-1][1], "[DONE]")
        usage_chunk = json.loads(events[-2][1])
        self.assertEqual(usage_chunk["choices"], [])
        self.assertEqual(usage_chunk["usage"]["completion_tokens"], (len("echo: grüße aus köln".encode()) + 3) // 4)
        for _, data in events[:-2]:
            self.assertIsNone(json.loads(data)["usage"])
        text, done = self.openai_text(body)
        self.assertEqual(text, "echo: grüße aus köln")
        for _, data in events[1:-3]:
            self.assertLessEqual(len(json.loads(data)["choices"][0]["delta"]["content"].encode()), 7)

    def test_openai_stream_without_usage_and_length(self):
        st, _, body = self.openai("abcdefghijklmnop", stream=True, max_tokens=2)
        events = parse_sse(body)
        self.assertNotIn("usage", json.loads(events[0][1]))
        text, done = self.openai_text(body)
        self.assertEqual(text, "echo: ab")
        self.assertTrue(done)
        self.assertEqual(json.loads(events[-2][1])["choices"][0]["finish_reason"], "length")

    def test_openai_auth_and_validation(self):
        st, _, body = self.openai("x", key="wrong")
        self.assertEqual(st, 401)
        self.assertEqual(json.loads(body)["error"]["code"], "invalid_api_key")
        self.assertNotIn(b"wrong", body)
        st, _, body = self.post("/v1/chat/completions", {"model": "m", "messages": []},
                                {"Authorization": "Bearer " + OPENAI_KEY})
        self.assertEqual(st, 400)
        self.assertEqual(json.loads(body)["error"]["type"], "invalid_request_error")
        st, _, body = self.openai("x", max_tokens=5, max_completion_tokens=5)
        self.assertEqual(st, 400)
        st, _, body = self.openai("x", stream_options={"include_usage": True})
        self.assertEqual(st, 400)
        st, _, _ = self.post("/openai-compat/v1/chat/completions", b"{not json",
                             {"Authorization": "Bearer " + OPENAI_KEY})
        self.assertEqual(st, 400)

    def test_openai_status_fault_counts_per_prompt(self):
        prompt = "retry me %f [[fault:status code=429 times=2 retry_after=1 retry_after_ms=1500]]" % time.time()
        for _ in range(2):
            st, h, body = self.openai(prompt)
            self.assertEqual(st, 429)
            self.assertEqual(h["retry-after"], "1")
            self.assertEqual(h["retry-after-ms"], "1500")
            self.assertEqual(json.loads(body)["error"]["code"], "rate_limit_exceeded")
        st, _, body = self.openai(prompt)
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"], "echo: " + prompt)
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        self.assertEqual(self.stats()["by_prompt"][digest], 3)

    def test_openai_inband_error_and_no_done(self):
        st, _, body = self.openai("in band [[fault:inband_error after=10]]", stream=True)
        self.assertEqual(st, 200)
        last = json.loads(parse_sse(body)[-1][1])
        self.assertIn("error", last)
        self.assertNotIn(b"[DONE]", body)
        st, _, body = self.openai("no done [[fault:no_done]]", stream=True)
        text, done = self.openai_text(body)
        self.assertEqual(text, "echo: no done [[fault:no_done]]")
        self.assertFalse(done)

    def test_cut_is_an_incomplete_transfer(self):
        c = self.conn()
        c.request("POST", "/v1/chat/completions", body=json.dumps({
            "model": "m", "stream": True,
            "messages": [{"role": "user", "content": "cut here please [[fault:cut after=12]]"}]}),
            headers={"Authorization": "Bearer " + OPENAI_KEY})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        with self.assertRaises(http.client.IncompleteRead) as cm:
            r.read()
        c.close()
        text, done = self.openai_text(cm.exception.partial)
        self.assertEqual(text, "echo: cut he")
        self.assertFalse(done)

    def test_malformed_sse(self):
        st, _, body = self.openai("broken json [[fault:malformed]]", stream=True)
        bad = 0
        for _, data in parse_sse(body):
            if data == "[DONE]":
                continue
            try:
                json.loads(data)
            except ValueError:
                bad += 1
        self.assertEqual(bad, 1)

    def test_reset_and_silence_and_garbage(self):
        c = self.conn()
        c.request("POST", "/v1/chat/completions", body=json.dumps({
            "model": "m", "messages": [{"role": "user", "content": "[[fault:reset]]"}]}),
            headers={"Authorization": "Bearer " + OPENAI_KEY})
        with self.assertRaises((ConnectionResetError, http.client.RemoteDisconnected)):
            c.getresponse().read()
        c.close()
        c = self.conn(timeout=0.5)
        c.request("POST", "/v1/chat/completions", body=json.dumps({
            "model": "m", "messages": [{"role": "user", "content": "hush [[fault:silence]]"}]}),
            headers={"Authorization": "Bearer " + OPENAI_KEY})
        with self.assertRaises(socket.timeout):
            c.getresponse()
        c.close()
        st, h, body = self.openai("[[fault:garbage times=1]] html")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        st, h, _ = self.openai("[[fault:garbage times=1]] html")
        self.assertTrue(h["content-type"].startswith("application/json"))

    def test_timing_faults(self):
        t0 = time.monotonic()
        st, _, _ = self.openai("slow [[fault:slow_first_byte seconds=0.4]]")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        t0 = time.monotonic()
        st, _, body = self.openai("stall [[fault:stall after=8 seconds=0.4]]", stream=True)
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        self.assertEqual(self.openai_text(body), ("echo: stall [[fault:stall after=8 seconds=0.4]]", True))
        t0 = time.monotonic()
        self.openai("lat [[fault:latency seconds=0.3]]")
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)

    def test_gate_holds_the_answer_until_opened(self):
        got = {}
        t = threading.Thread(target=lambda: got.update(r=self.openai("held [[fault:gate name=g1]]")))
        t.start()
        t.join(0.5)  # time passes on purpose: a closed gate holds the answer
        self.assertTrue(t.is_alive())
        c = self.conn()
        c.request("POST", "/_open?gate=g1")
        self.assertEqual(json.loads(c.getresponse().read()), {"ok": True, "gate": "g1"})
        c.close()
        t.join(10)
        self.assertFalse(t.is_alive())
        st, _, body = got["r"]
        self.assertEqual(st, 200)
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"],
                         "echo: held [[fault:gate name=g1]]")
        # an open gate stays open
        st, _, _ = self.openai("again [[fault:gate name=g1]]")
        self.assertEqual(st, 200)

    def test_endless_and_fragment(self):
        c = self.conn()
        c.request("POST", "/v1/chat/completions", body=json.dumps({
            "model": "m", "stream": True,
            "messages": [{"role": "user", "content": "forever [[fault:endless]]"}]}),
            headers={"Authorization": "Bearer " + OPENAI_KEY})
        r = c.getresponse()
        got = 0
        while got < 200000:
            piece = r.read(65536)
            self.assertTrue(piece)
            got += len(piece)
        c.close()
        st, _, body = self.openai("tiny writes ü [[fault:fragment bytes=3]]", stream=True)
        self.assertEqual(self.openai_text(body)[0], "echo: tiny writes ü [[fault:fragment bytes=3]]")

    def test_long_answer(self):
        prompt = "pad me é [[fault:long bytes=100000]]"
        want = common.pad_text("echo: " + prompt, 100000)
        self.assertEqual(len(want.encode()), 100000)
        self.assertTrue(want.startswith("echo: " + prompt + "0123456789012"))
        st, _, body = self.openai(prompt, stream=True)
        self.assertEqual((st, self.openai_text(body)), (200, (want, True)))
        st, _, body = self.openai(prompt)
        obj = json.loads(body)
        self.assertEqual(obj["choices"][0]["message"]["content"], want)
        self.assertEqual(obj["usage"]["completion_tokens"], 25000)
        # a token limit still cuts the padded text
        st, _, body = self.openai(prompt, max_tokens=30)
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"],
                         want.encode()[:120].decode())
        # shorter than the answer already: unchanged
        st, _, body = self.openai("short [[fault:long bytes=3]]")
        self.assertEqual(json.loads(body)["choices"][0]["message"]["content"],
                         "echo: short [[fault:long bytes=3]]")
        st, _, body = self.openai("[[fault:long]]")
        self.assertEqual(st, 400)
        self.assertIn(b"bytes=N", body)

    def test_completions_count_whole_answers_only(self):
        def completions(prompt):
            return self.get_json("/_completions")[1].get(
                hashlib.sha256(prompt.encode()).hexdigest(), 0)

        whole = "whole %f" % time.time()
        self.openai(whole)
        self.openai(whole, stream=True)
        self.anthropic(whole, stream=True)
        self.assertEqual(completions(whole), 3)
        # a stall or a finish word still ends in a whole answer
        slow = "stalled %f [[fault:stall after=3 seconds=0.1]]" % time.time()
        self.openai(slow, stream=True)
        self.assertEqual(completions(slow), 1)
        # errors and broken answers are not counted
        for fault in ("status code=503", "cut after=5", "no_done", "inband_error",
                      "malformed", "reset"):
            prompt = "broken %f [[fault:%s]]" % (time.time(), fault)
            try:
                self.openai(prompt, stream=True)
            except (http.client.HTTPException, OSError):
                pass  # cut and reset break the transfer on purpose
            self.assertEqual(completions(prompt), 0, fault)
        # nor is an answer whose client left before its end
        gone = "gone %f [[fault:gate name=g-gone]]" % time.time()
        c = self.conn(timeout=0.3)
        c.request("POST", "/v1/chat/completions", body=json.dumps({
            "model": "m", "messages": [{"role": "user", "content": gone}]}),
            headers={"Authorization": "Bearer " + OPENAI_KEY})
        with self.assertRaises(socket.timeout):
            c.getresponse()
        c.close()
        self.assertTrue(self.get_json("/_open?gate=g-gone")[1]["ok"])
        deadline = time.monotonic() + 5
        while self.stats()["inflight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(completions(gone), 0)
        self.get_json("/_reset")
        self.assertEqual(completions(whole), 0)

    def test_unknown_directive_is_rejected(self):
        st, _, body = self.openai("[[fault:nosuchthing]]")
        self.assertEqual(st, 400)
        self.assertIn(b"nosuchthing", body)

    # ----- Azure ----------------------------------------------------------------------
    def test_azure_stream_quirks(self):
        st, h, body = self.azure("azure hi", stream=True, stream_options={"include_usage": True})
        self.assertEqual(st, 200)
        events = parse_sse(body)
        first = json.loads(events[0][1])
        self.assertEqual(first["choices"], [])
        self.assertIn("prompt_filter_results", first)
        self.assertTrue(any("content_filter_results" in json.loads(d)["choices"][0]
                            for _, d in events[2:-3] if json.loads(d)["choices"]))
        self.assertEqual(self.openai_text(body), ("echo: azure hi", True))
        self.assertTrue(h["apim-request-id"])

    def test_azure_non_stream_and_auth(self):
        st, _, body = self.azure("x", headers={"Authorization": "Bearer " + AZURE_TOKEN}, max_tokens=50)
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["model"], "gpt-4o-prod")
        st, _, body = self.azure("x", headers={"api-key": "nope"})
        self.assertEqual(st, 401)
        self.assertEqual(json.loads(body)["error"]["code"], "401")
        st, _, body = self.azure("x", version=None)
        self.assertEqual(st, 404)
        self.assertEqual(json.loads(body)["error"]["message"], "Resource not found")

    def test_azure_faults(self):
        st, h, body = self.azure("az %f [[fault:status code=429 times=1 retry_after=6]]" % time.time())
        self.assertEqual(st, 429)
        self.assertIn("Please retry after 6 seconds.", json.loads(body)["error"]["message"])
        self.assertEqual(json.loads(body)["error"]["code"], "429")
        st, _, body = self.azure("bad [[fault:content_filter]]")
        self.assertEqual(st, 400)
        err = json.loads(body)["error"]
        self.assertEqual(err["code"], "content_filter")
        self.assertTrue(err["innererror"]["content_filter_result"]["jailbreak"]["filtered"])
        # content_filter is Azure's own: plain OpenAI ignores it
        st, _, _ = self.openai("bad [[fault:content_filter]]")
        self.assertEqual(st, 200)

    # ----- Bedrock --------------------------------------------------------------------
    def test_bedrock_converse(self):
        st, h, body = self.bedrock("bonjour")
        self.assertEqual(st, 200, body)
        obj = json.loads(body)
        self.assertEqual(obj["output"]["message"]["content"][0]["text"], "echo: bonjour")
        self.assertEqual(obj["stopReason"], "end_turn")
        self.assertEqual(obj["usage"]["inputTokens"], 2)
        self.assertTrue(h["x-amzn-requestid"])

    def test_bedrock_converse_stream(self):
        st, h, body = self.bedrock("ein längerer Text", stream=True)
        self.assertEqual(st, 200, body)
        self.assertEqual(h["content-type"], "application/vnd.amazon.eventstream")
        frames = eventstream.decode_stream(body)
        kinds = [f[0][":event-type"] for f in frames]
        self.assertEqual(kinds[0], "messageStart")
        self.assertEqual(kinds[-3:], ["contentBlockStop", "messageStop", "metadata"])
        text = ""
        for headers, payload in frames:
            self.assertEqual(headers[":message-type"], "event")
            self.assertEqual(headers[":content-type"], "application/json")
            obj = json.loads(payload)
            self.assertIn("p", obj)
            if headers[":event-type"] == "contentBlockDelta":
                text += obj["delta"]["text"]
        self.assertEqual(text, "echo: ein längerer Text")
        meta = json.loads(frames[-1][1])
        self.assertEqual(meta["usage"]["outputTokens"], (len(text.encode()) + 3) // 4)

    def test_bedrock_auth_failures(self):
        st, h, body = self.bedrock("x", sk="wrong-secret")
        self.assertEqual(st, 403)
        self.assertTrue(h["x-amzn-errortype"].startswith("InvalidSignatureException"))
        self.assertIn("Canonical String", json.loads(body)["message"])
        self.assertNotIn(AWS_SK.encode(), body)
        st, h, _ = self.bedrock("x", tamper=True)
        self.assertEqual(st, 403)
        st, h, _ = self.bedrock("x", region="us-east-1")
        self.assertEqual(st, 403)
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=6)
        st, h, body = self.bedrock("x", when=old)
        self.assertEqual(st, 403)
        self.assertIn("Signature expired", json.loads(body)["message"])
        st, h, _ = self.bedrock("x", token="unexpected-token")
        self.assertEqual(st, 403)
        self.assertTrue(h["x-amzn-errortype"].startswith("UnrecognizedClientException"))
        st, h, _ = self.post("/model/m/converse", {"messages": []})
        self.assertEqual(st, 403)
        self.assertTrue(h["x-amzn-errortype"].startswith("MissingAuthenticationTokenException"))

    def test_bedrock_validation_and_faults(self):
        body = json.dumps({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}).encode()
        st, h, _ = self.bedrock("x", body=body)
        self.assertEqual(st, 400)
        self.assertTrue(h["x-amzn-errortype"].startswith("ValidationException"))
        st, h, body = self.bedrock("bd %f [[fault:status code=429 times=1]]" % time.time())
        self.assertEqual(st, 429)
        self.assertTrue(h["x-amzn-errortype"].startswith("ThrottlingException"))
        self.assertIn("message", json.loads(body))
        st, _, body = self.bedrock("crc [[fault:malformed]]", stream=True)
        with self.assertRaises(eventstream.DecodeError):
            eventstream.decode_stream(body)
        st, _, body = self.bedrock("oops [[fault:inband_error code=429]]", stream=True)
        frames = eventstream.decode_stream(body)
        self.assertEqual(frames[-1][0][":message-type"], "exception")
        self.assertEqual(frames[-1][0][":exception-type"], "throttlingException")
        st, _, body = self.bedrock("nd [[fault:no_done]]", stream=True)
        kinds = [f[0][":event-type"] for f in eventstream.decode_stream(body)]
        self.assertNotIn("messageStop", kinds)
        self.assertNotIn("metadata", kinds)

    # ----- Vertex ---------------------------------------------------------------------
    def test_vertex_jwt_flow_and_generate(self):
        token = self.vertex_token()
        before = self.stats()["tokens_issued"]
        token2 = self.vertex_token()
        self.assertNotEqual(token, token2)
        self.assertEqual(self.stats()["tokens_issued"], before + 1)
        st, _, body = self.vertex("ciao", token=token)
        self.assertEqual(st, 200, body)
        obj = json.loads(body)
        self.assertEqual(obj["candidates"][0]["content"]["parts"][0]["text"], "echo: ciao")
        self.assertEqual(obj["candidates"][0]["finishReason"], "STOP")
        self.assertEqual(obj["usageMetadata"]["candidatesTokenCount"], 3)
        self.assertTrue(obj["responseId"])

    def test_vertex_stream(self):
        st, h, body = self.vertex("stream me please", stream=True, maxOutputTokens=3)
        self.assertEqual(st, 200, body)
        self.assertIn(b"\r\n\r\n", body)
        chunks = [json.loads(d) for _, d in parse_sse(body)]
        text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
        self.assertEqual(text, "echo: stream")
        self.assertEqual(chunks[-1]["candidates"][0]["finishReason"], "MAX_TOKENS")
        self.assertEqual(chunks[-1]["usageMetadata"]["candidatesTokenCount"], 3)
        self.assertNotIn("finishReason", chunks[0]["candidates"][0])

    def test_vertex_auth_failures(self):
        st, h, body = self.vertex("x", token="ya29.never-issued")
        self.assertEqual(st, 401)
        self.assertEqual(json.loads(body)["error"]["status"], "UNAUTHENTICATED")
        st, _, _ = self.vertex("x", token=None)
        self.assertEqual(st, 401)
        now = int(time.time())
        claims = {"iss": self.sa["client_email"], "aud": self.sa["token_uri"],
                  "scope": CLOUD_PLATFORM, "iat": now, "exp": now + 3600}
        other = googleauth.rsa.generate_private_key(public_exponent=65537, key_size=2048)
        other_pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        bad = [make_jwt(other_pem, self.sa["private_key_id"], claims),
               make_jwt(self.sa["private_key"], self.sa["private_key_id"], dict(claims, exp=now + 7200)),
               make_jwt(self.sa["private_key"], self.sa["private_key_id"], dict(claims, aud="https://elsewhere/token")),
               make_jwt(self.sa["private_key"], self.sa["private_key_id"], dict(claims, iat=now - 4000, exp=now - 400)),
               make_jwt(self.sa["private_key"], "other-kid", claims)]
        for jwt in bad:
            form = urllib.parse.urlencode({"grant_type": googleauth.GRANT_TYPE, "assertion": jwt})
            st, _, body = self.post("/token", form.encode(),
                                    {"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(st, 400, body)
            self.assertEqual(json.loads(body)["error"], "invalid_grant")
        # expiry is judged by the issuing authority's clock
        authority = googleauth.TokenAuthority(static_token=None)
        authority._tokens["t"] = time.time() + 1
        self.assertIsNone(authority.check("t"))
        self.assertEqual(authority.check("t", now=time.time() + 2), "expired")

    def test_vertex_faults(self):
        st, _, body = self.vertex("vx %f [[fault:status code=429 times=1]]" % time.time())
        self.assertEqual(st, 429)
        self.assertEqual(json.loads(body)["error"]["status"], "RESOURCE_EXHAUSTED")
        st, _, body = self.vertex("vertex no done [[fault:no_done]]", stream=True)
        chunks = [json.loads(d) for _, d in parse_sse(body)]
        self.assertTrue(all("finishReason" not in c["candidates"][0] for c in chunks))
        st, _, body = self.post("/v1/projects/p/locations/l/publishers/google/models/g:generateContent",
                                {"contents": [{"role": "user"}]}, {"Authorization": "Bearer " + VERTEX_STATIC})
        self.assertEqual(st, 400)
        self.assertEqual(json.loads(body)["error"]["status"], "INVALID_ARGUMENT")

    # ----- Anthropic ------------------------------------------------------------------
    def test_anthropic_messages(self):
        st, h, body = self.anthropic("salut", system=[{"type": "text", "text": "be brief"}])
        self.assertEqual(st, 200, body)
        obj = json.loads(body)
        self.assertEqual(obj["content"][0]["text"], "[system: be brief] echo: salut")
        self.assertEqual(obj["stop_reason"], "end_turn")
        self.assertTrue(h["request-id"])

    def test_anthropic_stream(self):
        st, _, body = self.anthropic("stream it", stream=True, max_tokens=2)
        self.assertEqual(st, 200)
        events = parse_sse(body)
        names = [e for e, _ in events]
        self.assertEqual(names[:3], ["message_start", "content_block_start", "ping"])
        self.assertEqual(names[-3:], ["content_block_stop", "message_delta", "message_stop"])
        text = "".join(json.loads(d)["delta"]["text"] for e, d in events if e == "content_block_delta")
        self.assertEqual(text, "echo: st")
        delta = json.loads(events[-2][1])
        self.assertEqual(delta["delta"]["stop_reason"], "max_tokens")
        self.assertEqual(delta["usage"]["output_tokens"], 2)
        self.assertEqual(json.loads(events[0][1])["message"]["usage"]["input_tokens"], 3)

    def test_anthropic_auth_validation_faults(self):
        st, _, body = self.anthropic("x", headers={"x-api-key": "bad", "anthropic-version": "2023-06-01"})
        self.assertEqual(st, 401)
        self.assertEqual(json.loads(body)["error"]["type"], "authentication_error")
        st, _, body = self.anthropic("x", headers={"x-api-key": ANTHROPIC_KEY})
        self.assertEqual(st, 400)
        st, _, body = self.post("/v1/messages", {"model": "c", "messages": [{"role": "user", "content": "x"}]},
                                {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"})
        self.assertEqual(st, 400)
        self.assertEqual(json.loads(body)["error"]["type"], "invalid_request_error")
        st, _, body = self.anthropic("an %f [[fault:status code=529 times=1]]" % time.time())
        self.assertEqual(st, 529)
        self.assertEqual(json.loads(body)["error"]["type"], "overloaded_error")
        st, _, body = self.anthropic("mid [[fault:inband_error]]", stream=True)
        events = parse_sse(body)
        self.assertEqual(events[-1][0], "error")
        self.assertEqual(json.loads(events[-1][1])["error"]["type"], "overloaded_error")

    # ----- server behaviour -----------------------------------------------------------
    def get_json(self, path):
        c = self.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def test_finish_fault_replaces_the_finish_word(self):
        st, _, body = self.bedrock("guarded [[fault:finish reason=guardrail_intervened]]",
                                   stream=True)
        self.assertEqual(st, 200, body)
        frames = eventstream.decode_stream(body)
        stop = [json.loads(p) for h, p in frames if h[":event-type"] == "messageStop"]
        self.assertEqual(stop[0]["stopReason"], "guardrail_intervened")
        st, _, body = self.bedrock("filtered [[fault:finish reason=content_filtered]]")
        self.assertEqual(json.loads(body)["stopReason"], "content_filtered")
        st, _, body = self.openai("cf [[fault:finish reason=content_filter]]")
        self.assertEqual(json.loads(body)["choices"][0]["finish_reason"], "content_filter")
        st, _, body = self.vertex("safety [[fault:finish reason=SAFETY]]", stream=True)
        self.assertIn(b'"finishReason":"SAFETY"', body)
        st, _, body = self.anthropic("refusal [[fault:finish reason=refusal]]")
        self.assertEqual(json.loads(body)["stop_reason"], "refusal")
        # it combines with a shaping fault, and needs its word
        st, _, body = self.openai("cf2 [[fault:finish reason=content_filter]][[fault:stall after=1 seconds=0]]",
                                  stream=True)
        self.assertIn(b'"finish_reason":"content_filter"', body)
        st, _, body = self.openai("bad [[fault:finish]]")
        self.assertEqual(st, 400)
        self.assertIn(b"reason=WORD", body)

    def test_last_request_by_provider_and_prompt(self):
        prompt = "remember me %f" % time.time()
        self.bedrock(prompt)
        st, last = self.get_json("/_last?provider=bedrock")
        self.assertEqual(st, 200)
        self.assertEqual(last["provider"], "bedrock")
        self.assertEqual(last["body"]["inferenceConfig"]["maxTokens"], 256)
        self.assertTrue(last["path"].endswith("/converse"))
        self.assertEqual(last["model"], "anthropic.claude-3-haiku-20240307-v1:0")
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        self.vertex(prompt, maxOutputTokens=9)
        st, last = self.get_json("/_last?prompt=" + digest)
        self.assertEqual((st, last["provider"]), (200, "vertex"))
        self.assertEqual(last["body"]["generationConfig"]["maxOutputTokens"], 9)
        st, last = self.get_json("/_last?prompt=%s&provider=bedrock" % digest)
        self.assertEqual(st, 404)
        st, last = self.get_json("/_last?prompt=" + "0" * 64)
        self.assertEqual(st, 404)
        self.assertEqual(self.get_json("/_last")[0], 404)

    def test_provider_filter_in_directive(self):
        prompt = "only azure %f [[fault:status code=503 provider=azure]]" % time.time()
        self.assertEqual(self.azure(prompt)[0], 503)
        self.assertEqual(self.openai(prompt)[0], 200)

    def test_keepalive_sequential_and_concurrent(self):
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "seq"}]})
        headers = {"Authorization": "Bearer " + OPENAI_KEY, "Content-Type": "application/json"}
        c = self.conn()
        t0 = time.monotonic()
        for _ in range(300):
            c.request("POST", "/v1/chat/completions", body=body, headers=headers)
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
        c.close()
        self.assertLess(time.monotonic() - t0, 10)

        barrier = threading.Barrier(250, timeout=20)

        def one(i):
            c = self.conn(timeout=20)
            c.connect()
            barrier.wait()
            c.request("POST", "/v1/chat/completions", body=json.dumps({
                "model": "m", "stream": True,
                "messages": [{"role": "user", "content": "par %d [[fault:latency seconds=0.5]]" % i}]}),
                headers=headers)
            r = c.getresponse()
            data = r.read()
            c.close()
            return self.openai_text(data)[0]

        with concurrent.futures.ThreadPoolExecutor(250) as pool:
            results = list(pool.map(one, range(250)))
        for i, text in enumerate(results):
            self.assertEqual(text, "echo: par %d [[fault:latency seconds=0.5]]" % i)
        self.assertGreaterEqual(self.stats()["max_inflight"], 200)

    def test_runtime_faults_and_request_log(self):
        """Faults set for a deployment at run time apply to every prompt sent
        there, count `times=` per rule, and go away when cleared; the request
        log shows each request's time, deployment, status and faults."""
        t0 = time.time()
        stamp = "%f" % t0
        path = "/rt-%s/v1/chat/completions" % stamp.replace(".", "")
        q = urllib.parse.urlencode([("provider", "openai"), ("path", path[:12]), ("model", "gpt-4o"),
                                    ("fault", "status code=503 times=2 retry_after=1")])
        st, _, body = self.post("/_faults?" + q, b"")
        self.assertEqual(st, 200, body)
        rule = json.loads(body)["rule"]
        self.assertEqual(rule["faults"], ["status code=503 times=2 retry_after=1"])
        headers = {"Authorization": "Bearer " + OPENAI_KEY}

        def send(prompt, model="gpt-4o", where=path):
            return self.post(where, {"model": model, "messages": [
                {"role": "user", "content": prompt}]}, headers)[0]

        # two different prompts share the rule's two failures
        self.assertEqual(send("first " + stamp), 503)
        self.assertEqual(send("second " + stamp), 503)
        self.assertEqual(send("third " + stamp), 200)
        # another model is another deployment
        self.assertEqual(send("other model " + stamp, model="gpt-4o-mini"), 200)
        # a rule for a whole provider, set from a JSON body, replaced, cleared
        st, _, body = self.post("/_faults", {"provider": "anthropic", "faults": ["status code=529"]})
        self.assertEqual(st, 200, body)
        self.assertEqual(self.anthropic("overloaded " + stamp)[0], 529)
        self.post("/_faults", {"provider": "anthropic", "faults": ["status code=429 reset_after=2"]})
        st, h, _ = self.anthropic("limited " + stamp)
        self.assertEqual(st, 429)
        self.assertEqual(h["anthropic-ratelimit-requests-remaining"], "0")
        self.assertRegex(h["anthropic-ratelimit-requests-reset"], r"^\d{4}-\d\d-\d\dT[\d:.]+Z$")
        st, rules = self.get_json("/_faults")
        self.assertEqual(len(rules["rules"]), 2)
        self.post("/_faults", {"provider": "anthropic", "faults": []})
        self.assertEqual(self.anthropic("fine " + stamp)[0], 200)
        # the prompt's own directives come first
        self.post("/_faults?" + q, b"")
        self.assertEqual(send("own [[fault:status code=400]] " + stamp), 400)
        # an unknown directive is refused
        st, _, body = self.post("/_faults?fault=nonsense", b"")
        self.assertEqual(st, 400)
        c = self.conn()
        c.request("DELETE", "/_faults")
        self.assertEqual(json.loads(c.getresponse().read()), {"ok": True, "rules": []})
        c.close()
        self.assertEqual(send("cleared " + stamp), 200)

        # a request is logged as it ends, just after its answer is out: the
        # client may see the answer first, and the next request may end
        # before it is logged, so the log is in the order requests ended
        deadline = time.time() + 10
        while True:
            st, log = self.get_json("/_requests?path=%s&since=%f" % (path, t0))
            self.assertEqual(st, 200)
            logged = log["requests"]
            if len(logged) >= 6 or time.time() > deadline:
                break
            time.sleep(0.02)
        self.assertEqual(sorted(e["seq"] for e in logged), [e["seq"] for e in logged])
        entries = sorted(logged, key=lambda e: e["t"])
        self.assertEqual([e["status"] for e in entries], [503, 503, 200, 200, 400, 200])
        self.assertEqual([e["model"] for e in entries][3], "gpt-4o-mini")
        self.assertEqual(entries[0]["faults"], ["status"])
        self.assertEqual(entries[0]["rules"], [rule["id"]])
        self.assertEqual(entries[2]["rules"], [])
        self.assertEqual(entries[0]["prompt"], hashlib.sha256(("first " + stamp).encode()).hexdigest())
        for e in entries:
            self.assertEqual((e["provider"], e["path"], e["method"]), ("openai", path, "POST"))
            self.assertGreaterEqual(e["t"], t0)
            self.assertGreaterEqual(e["t_end"], e["t"])
        st, log = self.get_json("/_requests?provider=anthropic&status=429&since=%f" % t0)
        self.assertEqual(len(log["requests"]), 1)
        self.assertEqual(self.get_json("/_requests?since=soon")[0], 400)

    def test_stats_log_and_control(self):
        self.openai("counted")
        snap = self.stats()
        self.assertGreater(snap["requests"], 0)
        self.assertIn("/v1/chat/completions", snap["by_path"])
        with open(self.log_path) as f:
            log = f.read()
        self.assertIn("POST /v1/chat/completions 200", log)
        for secret in (OPENAI_KEY, AZURE_KEY, ANTHROPIC_KEY, AWS_SK, VERTEX_STATIC):
            self.assertNotIn(secret, log)
        with open(os.path.join(self.tmp, "port")) as f:
            self.assertEqual(int(f.read()), self.port)
        self.assertEqual(os.stat(self.sa_path).st_mode & 0o777, 0o600)


class TlsTest(unittest.TestCase):
    def test_https(self):
        if not shutil.which("openssl"):
            self.skipTest("openssl CLI not installed")
        tmp = tempfile.mkdtemp(prefix="fakecloud-tls-")
        try:
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", key, "-out", cert], check=True, capture_output=True)
            proc, port = start_fake(["--tls", cert, key], tmp)
            try:
                ctx = ssl.create_default_context(cafile=cert)
                c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
                for _ in range(2):  # keep-alive over TLS
                    c.request("POST", "/v1/messages", body=json.dumps({
                        "model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "tls"}]}),
                        headers={"anthropic-version": "2023-06-01"})
                    r = c.getresponse()
                    self.assertEqual(r.status, 200)
                    self.assertEqual(json.loads(r.read())["content"][0]["text"], "echo: tls")
                c.close()
                c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
                c.request("POST", "/v1/messages", body=json.dumps({
                    "model": "c", "max_tokens": 10,
                    "messages": [{"role": "user", "content": "[[fault:reset]]"}]}),
                    headers={"anthropic-version": "2023-06-01"})
                with self.assertRaises((ConnectionResetError, http.client.RemoteDisconnected, ssl.SSLError)):
                    c.getresponse().read()
                c.close()
            finally:
                proc.terminate()
                self.assertEqual(proc.wait(10), 0)
                proc.stdout.close()
                proc.stderr.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
