"""AWS Bedrock Runtime Converse / ConverseStream, with SigV4 verification."""

import hmac
import random
import string
import time

import eventstream
import sigv4
from common import (BadRequest, Chat, Reject, check_unknown, is_int, is_num, jbody, jdump,
                    new_uuid)

_NS = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_FRONT_NS = "http://internal.amazon.com/coral/com.amazon.coral.service/"
_KNOWN = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
          "additionalModelRequestFields", "additionalModelResponseFieldPaths",
          "promptVariables", "requestMetadata", "performanceConfig", "serviceTier",
          "outputConfig"}
_BLOCKS = {"text", "image", "document", "video", "audio", "toolUse", "toolResult",
           "guardContent", "cachePoint", "reasoningContent", "citationsContent", "searchResult"}
_SYSTEM_BLOCKS = {"text", "guardContent", "cachePoint"}
_INFERENCE = {"maxTokens", "temperature", "topP", "stopSequences"}

_ERRORS = {400: "ValidationException", 403: "AccessDeniedException",
           404: "ResourceNotFoundException", 408: "ModelTimeoutException",
           424: "ModelErrorException", 429: "ThrottlingException",
           500: "InternalServerException", 503: "ServiceUnavailableException"}
_MESSAGES = {400: "The provided request is not valid.", 403: "You don't have access to the model with the specified model ID.",
             404: "The specified model could not be found.", 408: "Model has timed out in processing the request.",
             424: "The model returned an error.", 429: "Too many requests, please wait before trying again.",
             500: "The server encountered an internal error.",
             503: "The service is temporarily unable to handle the request."}
_STREAM_EXCEPTIONS = {400: "validationException", 424: "modelStreamErrorException",
                      429: "throttlingException", 500: "internalServerException",
                      503: "serviceUnavailableException"}
_FRONT_DOOR = {"UnrecognizedClientException", "InvalidSignatureException",
               "MissingAuthenticationTokenException", "IncompleteSignatureException"}
_PAD = string.ascii_lowercase + string.ascii_uppercase + string.digits


def _pad():
    return _PAD[:random.randint(1, len(_PAD))]


def _validation(path, problem):
    return BadRequest("1 validation error detected: Value at '%s' failed to satisfy constraint: %s"
                      % (path, problem), path)


class Bedrock:
    name = "bedrock"
    stream_type = "application/vnd.amazon.eventstream"
    inband_status = 424

    def new_request_id(self):
        return new_uuid()

    def authenticate(self, rq):
        cfg = rq.cfg
        auth = rq.headers.get("Authorization", "")
        if cfg.aws_bearer_token is not None and auth[:7].lower() == "bearer ":
            if hmac.compare_digest(auth[7:].strip().encode(), cfg.aws_bearer_token.encode()):
                return
            raise Reject(403, "Invalid API Key format: Must start with pre-defined prefix",
                         kind="UnrecognizedClientException")
        if cfg.aws_access_key is None:
            if cfg.aws_bearer_token is not None:
                raise Reject(403, "Missing Authentication Token",
                             kind="MissingAuthenticationTokenException")
            return
        try:
            scope = sigv4.verify("POST", rq.path, rq.query, rq.header_pairs, rq.body,
                                 access_key=cfg.aws_access_key, secret_key=cfg.aws_secret_key,
                                 service="bedrock", region=cfg.aws_region,
                                 session_token=cfg.aws_session_token, max_skew=cfg.aws_max_skew)
        except sigv4.SigV4Error as e:
            status = 400 if e.kind == "IncompleteSignatureException" else 403
            raise Reject(status, e.message, kind=e.kind)
        rq.region = scope["region"]

    def parse(self, rq, obj):
        check_unknown(obj, _KNOWN, "", "Unknown parameter in input: \"%s\"")
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _validation("messages", "Member must have length greater than or equal to 1")
        turns = []
        for i, msg in enumerate(messages):
            where = "messages.%d.member" % (i + 1)
            if not isinstance(msg, dict):
                raise _validation(where, "Member must be a structure")
            check_unknown(msg, {"role", "content"}, where, "Unknown parameter in input: \"%s\"")
            role = msg.get("role")
            if role not in ("user", "assistant"):
                raise _validation(where + ".role", "Member must satisfy enum value set: [user, assistant]")
            if i == 0 and role != "user":
                raise BadRequest("A conversation must start with a user message. Try again with a "
                                 "conversation that starts with a user message.", "messages")
            if i > 0 and role == turns[-1][0]:
                raise BadRequest("A conversation must alternate between user and assistant roles. "
                                 "Make sure the conversation alternates between user and assistant "
                                 "roles and try again.", "messages")
            turns.append((role, self._blocks_text(msg.get("content"), where + ".content", _BLOCKS)))
        system = None
        if "system" in obj:
            system = self._blocks_text(obj["system"], "system", _SYSTEM_BLOCKS, allow_empty=True)
        cfg = obj.get("inferenceConfig")
        max_tokens = None
        if cfg is not None:
            if not isinstance(cfg, dict):
                raise _validation("inferenceConfig", "Member must be a structure")
            check_unknown(cfg, _INFERENCE, "inferenceConfig", "Unknown parameter in input: \"%s\"")
            max_tokens = cfg.get("maxTokens")
            if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
                raise _validation("inferenceConfig.maxTokens",
                                  "Member must have value greater than or equal to 1")
            for key in ("temperature", "topP"):
                value = cfg.get(key)
                if value is not None and (not is_num(value) or not 0 <= value <= 1):
                    raise _validation("inferenceConfig." + key,
                                      "Member must have value between 0 and 1")
        if not any(role == "user" for role, _ in turns):
            raise BadRequest("A conversation must contain a user message.", "messages")
        return Chat(rq.model, turns, system or None, max_tokens, rq.match["op"] == "converse-stream")

    def _blocks_text(self, blocks, where, allowed, allow_empty=False):
        if not isinstance(blocks, list) or (not blocks and not allow_empty):
            raise _validation(where, "Member must be a non-empty list")
        texts = []
        for j, block in enumerate(blocks):
            bwhere = "%s.%d.member" % (where, j + 1)
            if not isinstance(block, dict) or len(block) != 1:
                raise _validation(bwhere, "Member must have exactly one union member set")
            (key, value), = block.items()
            if key not in allowed:
                raise _validation(bwhere, "Unknown union member '%s'" % key)
            if key == "text":
                if not isinstance(value, str):
                    raise _validation(bwhere + ".text", "Member must be a string")
                texts.append(value)
        return "".join(texts)

    def error(self, rq, status, message=None, kind=None, param=None, fault=None):
        name = kind or _ERRORS.get(status, "InternalServerException" if status >= 500
                                   else "ValidationException")
        if fault is not None and fault.get("type"):
            name = fault.get("type")
        ns = _FRONT_NS if name in _FRONT_DOOR else _NS
        headers = self.headers(rq)
        headers["x-amzn-ErrorType"] = "%s:%s" % (name, ns)
        msg = message or _MESSAGES.get(status, "The request failed.")
        return status, headers, jbody({"message": msg})

    def inband_error(self, rq, status, message=None):
        name = _STREAM_EXCEPTIONS.get(status, "internalServerException")
        payload = {"message": message or _MESSAGES.get(status, "The model returned an error.")}
        if name == "modelStreamErrorException":
            payload.update({"originalStatusCode": 500, "originalMessage": "model stream failed"})
        return eventstream.exception(name, jdump(payload).encode())

    def break_piece(self, data):
        return eventstream.corrupt(data)

    def headers(self, rq):
        return {"x-amzn-RequestId": rq.request_id}

    def _stop(self, ans):
        return ans.finish_word or ("max_tokens" if ans.truncated else "end_turn")

    def _usage(self, ans):
        return {"inputTokens": ans.input_tokens, "outputTokens": ans.output_tokens,
                "totalTokens": ans.total_tokens}

    def _latency_ms(self, rq):
        return max(1, int((time.monotonic() - rq.started) * 1000))

    def response(self, rq, chat, ans):
        return jbody({
            "output": {"message": {"role": "assistant", "content": [{"text": ans.text}]}},
            "stopReason": self._stop(ans),
            "usage": self._usage(ans),
            "metrics": {"latencyMs": self._latency_ms(rq)},
        })

    def _event(self, kind, obj):
        obj["p"] = _pad()
        return eventstream.event(kind, jdump(obj).encode())

    def text_piece(self, rq, chat, chunk):
        return self._event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": chunk}})

    def stream(self, rq, chat, ans, chunks):
        pieces = [("head", self._event("messageStart", {"role": "assistant"}), 0)]
        for chunk in chunks:
            pieces.append(("text", self.text_piece(rq, chat, chunk), len(chunk.encode())))
        pieces.append(("tail", self._event("contentBlockStop", {"contentBlockIndex": 0}), 0))
        pieces.append(("end", self._event("messageStop", {"stopReason": self._stop(ans)}), 0))
        pieces.append(("end", self._event("metadata", {
            "usage": self._usage(ans), "metrics": {"latencyMs": self._latency_ms(rq)}}), 0))
        return pieces
