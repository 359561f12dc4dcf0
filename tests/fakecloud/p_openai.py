"""OpenAI Chat Completions (and OpenAI-compatible servers) and the Azure
OpenAI dated deployments API, which shares its body format."""

import hmac
import secrets
import json
import re

from common import (BadRequest, Chat, Reject, break_json_event, check_unknown, is_int,
                    is_num, jbody, new_uuid, rand_id, sse, text_of_parts)

_KNOWN = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
    "stream", "stream_options", "stop", "n", "seed", "frequency_penalty", "presence_penalty",
    "logprobs", "top_logprobs", "logit_bias", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "functions", "function_call", "user", "store", "metadata",
    "reasoning_effort", "service_tier", "modalities", "prediction", "audio",
    "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier",
}
_AZURE_EXTRA = {"data_sources", "user_security_context"}
_ROLES = {"developer", "system", "user", "assistant", "tool", "function"}
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

_SAFE = {"filtered": False, "severity": "safe"}


def _filter_results(prompt=False):
    res = {k: dict(_SAFE) for k in ("hate", "self_harm", "sexual", "violence")}
    if prompt:
        res["jailbreak"] = {"filtered": False, "detected": False}
    else:
        res["protected_material_text"] = {"filtered": False, "detected": False}
    return res


def _bearer(rq):
    value = rq.headers.get("Authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


def _same(a, b):
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


class OpenAI:
    name = "openai"
    stream_type = "text/event-stream"
    azure = False
    inband_status = 500

    # ----- authentication and parsing -------------------------------------------------
    def new_request_id(self):
        return "req_" + secrets.token_hex(16)

    def authenticate(self, rq):
        key = rq.cfg.openai_key
        if key is None:
            return
        got = _bearer(rq)
        if got is None:
            raise Reject(401, "You didn't provide an API key. You need to provide your API key "
                              "in an Authorization header using Bearer auth (i.e. Authorization: "
                              "Bearer YOUR_KEY).", kind="missing_api_key")
        if not _same(got, key):
            raise Reject(401, "Incorrect API key provided. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", kind="invalid_api_key")

    def model_of(self, rq, obj):
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", "model")
        return model

    def parse(self, rq, obj):
        check_unknown(obj, _KNOWN | (_AZURE_EXTRA if self.azure else set()), "")
        model = self.model_of(rq, obj)
        messages = obj.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty array", "messages")
        turns, system = [], []
        for i, msg in enumerate(messages):
            where = "messages[%d]" % i
            if not isinstance(msg, dict):
                raise BadRequest("%s must be an object" % where, where)
            role = msg.get("role")
            if role not in _ROLES:
                raise BadRequest("Invalid value for '%s.role': expected one of %s"
                                 % (where, ", ".join(sorted(_ROLES))), where + ".role")
            content = msg.get("content")
            if content is None:
                if role in ("user", "system", "developer"):
                    raise BadRequest("%s.content is required for role '%s'" % (where, role),
                                     where + ".content")
                text = ""
            elif isinstance(content, str):
                text = content
            else:
                text = text_of_parts(content, where + ".content")
            if role in ("system", "developer"):
                system.append(text)
            else:
                turns.append((role, text))
        limits = {}
        for key in ("max_tokens", "max_completion_tokens"):
            value = obj.get(key)
            if value is not None:
                if not is_int(value) or value < 1:
                    raise BadRequest("Invalid '%s': expected an integer >= 1" % key, key)
                limits[key] = value
        if len(limits) == 2:
            raise BadRequest("Setting 'max_tokens' and 'max_completion_tokens' at the same time "
                             "is not supported.", "max_tokens")
        for key, hi in (("temperature", 2), ("top_p", 1)):
            value = obj.get(key)
            if value is not None and (not is_num(value) or not 0 <= value <= hi):
                raise BadRequest("Invalid '%s': expected a number between 0 and %d" % (key, hi), key)
        n = obj.get("n")
        if n is not None and (not is_int(n) or n != 1):
            raise BadRequest("Invalid 'n': this server only supports n=1", "n")
        stream = obj.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise BadRequest("Invalid 'stream': expected a boolean", "stream")
        opts = obj.get("stream_options")
        if opts is not None:
            if not stream:
                raise BadRequest("The 'stream_options' parameter is only allowed when 'stream' "
                                 "is enabled.", "stream_options")
            if not isinstance(opts, dict):
                raise BadRequest("Invalid 'stream_options': expected an object", "stream_options")
            check_unknown(opts, {"include_usage", "include_obfuscation"}, "stream_options")
            for key in ("include_usage", "include_obfuscation"):
                if key in opts and not isinstance(opts[key], bool):
                    raise BadRequest("Invalid 'stream_options.%s': expected a boolean" % key,
                                     "stream_options." + key)
        opts = opts or {}
        if not any(role == "user" for role, _ in turns):
            raise BadRequest("'messages' must contain at least one message with role 'user'",
                             "messages")
        limit = limits.get("max_completion_tokens", limits.get("max_tokens"))
        return Chat(model, turns, "\n".join(system) or None, limit, stream, {
            "include_usage": opts.get("include_usage") is True,
            "obfuscation": opts.get("include_obfuscation", True) is not False,
        })

    # ----- errors ---------------------------------------------------------------------
    _TYPES = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
              403: ("invalid_request_error", "unsupported_country_region_territory"),
              404: ("invalid_request_error", "model_not_found"),
              429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None),
              503: ("server_error", None)}
    _MESSAGES = {400: "Invalid request.", 401: "Incorrect API key provided.",
                 403: "Country, region, or territory not supported.",
                 404: "The model does not exist or you do not have access to it.",
                 429: "Rate limit reached for requests. Please try again in 1s.",
                 500: "The server had an error while processing your request. Sorry about that!",
                 503: "The engine is currently overloaded, please try again later."}

    def error(self, rq, status, message=None, kind=None, param=None, fault=None):
        etype, code = self._TYPES.get(status, ("server_error" if status >= 500
                                               else "invalid_request_error", None))
        if kind:
            code = kind
        if fault is not None and fault.get("type"):
            etype = fault.get("type")
        msg = message or self._MESSAGES.get(status, "Request failed with status %d." % status)
        body = {"error": {"message": msg, "type": etype, "param": param, "code": code}}
        return status, self.headers(rq), jbody(body)

    def inband_error(self, rq, status, message=None):
        _, _, body = self.error(rq, status, message)
        return sse(json.loads(body))

    def break_piece(self, data):
        return break_json_event(data)

    # ----- success --------------------------------------------------------------------
    def headers(self, rq):
        return {
            "x-request-id": rq.request_id,
            "openai-version": "2020-10-01",
            "openai-processing-ms": "1",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-tokens": "2ms",
        }

    def _finish(self, ans):
        return ans.finish_word or ("length" if ans.truncated else "stop")

    def _usage(self, ans):
        return {
            "prompt_tokens": ans.input_tokens, "completion_tokens": ans.output_tokens,
            "total_tokens": ans.total_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        }

    def _model_out(self, rq, chat):
        return chat.model

    def response(self, rq, chat, ans):
        choice = {"index": 0,
                  "message": {"role": "assistant", "content": ans.text, "refusal": None,
                              "annotations": []},
                  "logprobs": None, "finish_reason": self._finish(ans)}
        body = {"id": rq.completion_id, "object": "chat.completion", "created": rq.created,
                "model": self._model_out(rq, chat), "choices": [choice],
                "usage": self._usage(ans), "service_tier": "default",
                "system_fingerprint": "fp_fakecloud"}
        self._decorate_response(body, choice)
        return jbody(body)

    def _decorate_response(self, body, choice):
        pass

    def _chunk(self, rq, chat, choices, usage_slot=True, **extra):
        obj = {"id": rq.completion_id, "object": "chat.completion.chunk", "created": rq.created,
               "model": self._model_out(rq, chat), "system_fingerprint": "fp_fakecloud",
               "choices": choices}
        if chat.options["include_usage"] and usage_slot:
            obj["usage"] = None
        obj.update(extra)
        return obj

    def _choice(self, delta, finish=None):
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def text_piece(self, rq, chat, chunk):
        extra = {}
        if chat.options["obfuscation"]:
            extra["obfuscation"] = rand_id(1 + len(chunk) % 9)
        return sse(self._chunk(rq, chat, [self._choice({"content": chunk})], **extra))

    def stream(self, rq, chat, ans, chunks):
        pieces = [("head", sse(self._chunk(rq, chat, [self._choice(
            {"role": "assistant", "content": "", "refusal": None})])), 0)]
        for chunk in chunks:
            pieces.append(("text", self.text_piece(rq, chat, chunk), len(chunk.encode())))
        pieces.append(("tail", sse(self._chunk(rq, chat, [self._choice({}, self._finish(ans))])), 0))
        if chat.options["include_usage"]:
            usage = self._usage(ans)
            pieces.append(("tail", sse(self._chunk(rq, chat, [], usage_slot=False, usage=usage)), 0))
        pieces.append(("end", b"data: [DONE]\n\n", 0))
        return pieces


class Azure(OpenAI):
    name = "azure"
    azure = True

    def new_request_id(self):
        return new_uuid()

    def authenticate(self, rq):
        version = rq.params.get("api-version")
        if not version or not _API_VERSION.match(version):
            raise Reject(404, "Resource not found", kind="404")
        key, token = rq.cfg.azure_key, rq.cfg.azure_token
        if key is None and token is None:
            return
        if key is not None and _same(rq.headers.get("api-key"), key):
            return
        if token is not None and _same(_bearer(rq), token):
            return
        raise Reject(401, "Access denied due to invalid subscription key or wrong API endpoint. "
                          "Make sure to provide a valid key for an active subscription and use a "
                          "correct regional API endpoint for your resource.", kind="401")

    def model_of(self, rq, obj):
        model = obj.get("model")
        if model is not None and not isinstance(model, str):
            raise BadRequest("'model' must be a string", "model")
        return rq.match["deployment"]

    def _model_out(self, rq, chat):
        return rq.match["deployment"]

    _CODES = {400: "BadRequest", 401: "401", 403: "403", 404: "DeploymentNotFound",
              408: "Timeout", 429: "429", 500: "InternalServerError", 503: "ServiceUnavailable"}

    def error(self, rq, status, message=None, kind=None, param=None, fault=None):
        code = kind or self._CODES.get(status, str(status))
        if message is None:
            if status == 429:
                message = ("Requests to the ChatCompletions_Create Operation under Azure OpenAI "
                           "API version %s have exceeded token rate limit of your current OpenAI "
                           "S0 pricing tier." % rq.params.get("api-version", "unknown"))
                if fault is not None and fault.get("retry_after") is not None:
                    message += " Please retry after %d seconds." % max(1, round(fault.get("retry_after")))
                message += (" Please go here: https://aka.ms/oai/quotaincrease if you would like "
                            "to further increase the default rate limit.")
            elif status == 404:
                message = ("The API deployment for this resource does not exist. If you created "
                           "the deployment within the last 5 minutes, please wait a moment and "
                           "try again.")
            elif status >= 500:
                message = "The service is temporarily unable to process your request. Please try again later."
            else:
                message = "Request failed with status %d." % status
        err = {"code": code, "message": message}
        if param is not None:
            err["param"] = param
        return status, self.headers(rq), jbody({"error": err})

    def content_filter_error(self, rq):
        result = _filter_results(prompt=True)
        result["jailbreak"] = {"filtered": True, "detected": True}
        body = {"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
                       "content management policy. Please modify your prompt and retry. To learn "
                       "more about our content filtering policies please read our documentation: "
                       "https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": None, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation",
                           "content_filter_result": result}}}
        return 400, self.headers(rq), jbody(body)

    def headers(self, rq):
        return {
            "x-request-id": rq.request_id,
            "apim-request-id": rq.request_id,
            "x-ms-region": "Fake Region",
            "azureml-model-session": "fakecloud-0",
            "x-ratelimit-remaining-requests": "999",
            "x-ratelimit-remaining-tokens": "999000",
        }

    def _decorate_response(self, body, choice):
        choice["content_filter_results"] = _filter_results()
        body["prompt_filter_results"] = [{"prompt_index": 0,
                                          "content_filter_results": _filter_results(prompt=True)}]
        del body["service_tier"]

    def _choice(self, delta, finish=None):
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish,
                  "content_filter_results": _filter_results() if delta.get("content") else {}}
        return choice

    def text_piece(self, rq, chat, chunk):
        return sse(self._chunk(rq, chat, [self._choice({"content": chunk})]))

    def stream(self, rq, chat, ans, chunks):
        prompt_chunk = {"choices": [], "created": 0, "id": "", "model": "", "object": "",
                        "prompt_filter_results": [{"prompt_index": 0,
                                                   "content_filter_results": _filter_results(True)}]}
        pieces = [("head", sse(prompt_chunk), 0)]
        pieces.extend(super().stream(rq, chat, ans, chunks))
        # asynchronous filtering: a choice with no delta at all, only annotations
        total = len(ans.text.encode())
        late = {"index": 0, "finish_reason": None, "content_filter_results": _filter_results(),
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0,
                                           "end_offset": total}}
        first_tail = next(i for i, p in enumerate(pieces) if p[0] == "tail")
        pieces.insert(first_tail, ("tail", sse(self._chunk(rq, chat, [late])), 0))
        return pieces
