"""Anthropic Messages API."""

import hmac

from common import (BadRequest, Chat, Reject, break_json_event, check_unknown, is_int,
                    is_num, jbody, rand_id, sse, text_of_parts)

_KNOWN = {"model", "max_tokens", "messages", "system", "temperature", "top_p", "top_k",
          "stop_sequences", "stream", "tools", "tool_choice", "thinking", "metadata",
          "service_tier", "container", "mcp_servers", "context_management"}
_EXTRA = "%s: Extra inputs are not permitted"

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
          403: "permission_error", 404: "not_found_error", 413: "request_too_large",
          429: "rate_limit_error", 500: "api_error", 504: "timeout_error",
          529: "overloaded_error"}
_MESSAGES = {401: "invalid x-api-key", 403: "Your API key does not have permission to use the specified resource.",
             404: "Not found", 413: "Request exceeds the maximum allowed number of bytes.",
             429: "Number of request tokens has exceeded your per-minute rate limit.",
             500: "Internal server error", 504: "Request timed out", 529: "Overloaded"}


class Anthropic:
    name = "anthropic"
    stream_type = "text/event-stream"
    inband_status = 529

    def new_request_id(self):
        return new_request_id()

    def authenticate(self, rq):
        key = rq.cfg.anthropic_key
        if key is not None:
            got = rq.headers.get("x-api-key")
            if got is None:
                raise Reject(401, "x-api-key header is required")
            if not hmac.compare_digest(got.encode(), key.encode()):
                raise Reject(401, "invalid x-api-key")
        if not rq.headers.get("anthropic-version"):
            raise Reject(400, "anthropic-version: header is required")

    def parse(self, rq, obj):
        check_unknown(obj, _KNOWN, "", _EXTRA)
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required", "model")
        max_tokens = obj.get("max_tokens")
        if max_tokens is None:
            raise BadRequest("max_tokens: Field required", "max_tokens")
        if not is_int(max_tokens) or max_tokens < 1:
            raise BadRequest("max_tokens: Input should be a valid integer greater than or equal to 1",
                             "max_tokens")
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: Field required and must be a non-empty list", "messages")
        turns = []
        for i, msg in enumerate(messages):
            where = "messages.%d" % i
            if not isinstance(msg, dict):
                raise BadRequest("%s: Input should be a valid dictionary" % where, where)
            check_unknown(msg, {"role", "content"}, where, _EXTRA)
            role = msg.get("role")
            if role not in ("user", "assistant"):
                raise BadRequest("%s.role: Input should be 'user' or 'assistant'" % where,
                                 where + ".role")
            content = msg.get("content")
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):
                text = text_of_parts(content, where + ".content")
            else:
                raise BadRequest("%s.content: Field required" % where, where + ".content")
            turns.append((role, text))
        system = obj.get("system")
        if system is not None:
            if isinstance(system, list):
                system = text_of_parts(system, "system")
            elif not isinstance(system, str):
                raise BadRequest("system: Input should be a valid string or list of text blocks",
                                 "system")
        temperature = obj.get("temperature")
        if temperature is not None and (not is_num(temperature) or not 0 <= temperature <= 1):
            raise BadRequest("temperature: Input should be between 0 and 1", "temperature")
        stream = obj.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("stream: Input should be a valid boolean", "stream")
        if not any(role == "user" for role, _ in turns):
            raise BadRequest("messages: at least one message must have role 'user'", "messages")
        return Chat(model, turns, system or None, max_tokens, stream)

    def error(self, rq, status, message=None, kind=None, param=None, fault=None):
        etype = kind or _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        if fault is not None and fault.get("type"):
            etype = fault.get("type")
        msg = message or _MESSAGES.get(status, "Request failed with status %d." % status)
        body = {"type": "error", "error": {"type": etype, "message": msg},
                "request_id": rq.request_id}
        return status, self.headers(rq), jbody(body)

    def inband_error(self, rq, status, message=None):
        etype = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        msg = message or _MESSAGES.get(status, "Internal server error")
        return sse({"type": "error", "error": {"type": etype, "message": msg}}, event="error")

    def break_piece(self, data):
        return break_json_event(data)

    def headers(self, rq):
        return {"request-id": rq.request_id,
                "anthropic-organization-id": "00000000-0000-4000-8000-000000000000"}

    def _stop(self, ans):
        return ans.finish_word or ("max_tokens" if ans.truncated else "end_turn")

    def response(self, rq, chat, ans):
        return jbody({
            "id": rq.message_id, "type": "message", "role": "assistant", "model": chat.model,
            "content": [{"type": "text", "text": ans.text}],
            "stop_reason": self._stop(ans), "stop_sequence": None,
            "usage": {"input_tokens": ans.input_tokens, "output_tokens": ans.output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "service_tier": "standard"},
        })

    def text_piece(self, rq, chat, chunk):
        return sse({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": chunk}}, event="content_block_delta")

    def stream(self, rq, chat, ans, chunks):
        start = {"type": "message_start", "message": {
            "id": rq.message_id, "type": "message", "role": "assistant", "content": [],
            "model": chat.model, "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": ans.input_tokens, "output_tokens": 1,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "service_tier": "standard"}}}
        pieces = [
            ("head", sse(start, event="message_start"), 0),
            ("head", sse({"type": "content_block_start", "index": 0,
                          "content_block": {"type": "text", "text": ""}},
                         event="content_block_start"), 0),
            ("head", sse({"type": "ping"}, event="ping"), 0),
        ]
        for chunk in chunks:
            pieces.append(("text", self.text_piece(rq, chat, chunk), len(chunk.encode())))
        pieces.append(("tail", sse({"type": "content_block_stop", "index": 0},
                                   event="content_block_stop"), 0))
        pieces.append(("tail", sse({"type": "message_delta",
                                    "delta": {"stop_reason": self._stop(ans), "stop_sequence": None},
                                    "usage": {"output_tokens": ans.output_tokens}},
                                   event="message_delta"), 0))
        pieces.append(("end", sse({"type": "message_stop"}, event="message_stop"), 0))
        return pieces


def new_request_id():
    return "req_011" + rand_id(21)


def new_message_id():
    return "msg_01" + rand_id(22)
