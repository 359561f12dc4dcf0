"""Google Vertex AI Gemini generateContent / streamGenerateContent?alt=sse."""

import datetime

from common import (BadRequest, Chat, Reject, break_json_event, is_int, is_num, jbody,
                    new_uuid, sse)

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
           500: "INTERNAL", 501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_MESSAGES = {
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
         "cookie or other valid authentication credential. See "
         "https://developers.google.com/identity/sign-in/web/devconsole-project.",
    403: "Permission 'aiplatform.endpoints.predict' denied on resource (or it may not exist).",
    404: "Publisher Model was not found or your project does not have access to it.",
    429: "Resource exhausted. Please try again later. Please refer to "
         "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    504: "The request timed out. Please try again.",
}
_SEP = "\r\n\r\n"

# proto3 JSON accepts lowerCamelCase and the original snake_case names
_TOP = {"contents": "contents", "systemInstruction": "systemInstruction",
        "system_instruction": "systemInstruction", "generationConfig": "generationConfig",
        "generation_config": "generationConfig", "tools": "tools", "toolConfig": "toolConfig",
        "tool_config": "toolConfig", "safetySettings": "safetySettings",
        "safety_settings": "safetySettings", "cachedContent": "cachedContent",
        "cached_content": "cachedContent", "labels": "labels",
        "modelArmorConfig": "modelArmorConfig", "model_armor_config": "modelArmorConfig"}
_PART_DATA = {"text", "inlineData", "inline_data", "fileData", "file_data", "functionCall",
              "function_call", "functionResponse", "function_response", "executableCode",
              "executable_code", "codeExecutionResult", "code_execution_result"}
_PART_EXTRA = {"thought", "thoughtSignature", "thought_signature", "videoMetadata",
               "video_metadata"}
_GEN = {"temperature", "topP", "top_p", "topK", "top_k", "candidateCount", "candidate_count",
        "maxOutputTokens", "max_output_tokens", "stopSequences", "stop_sequences",
        "responseLogprobs", "response_logprobs", "logprobs", "presencePenalty",
        "presence_penalty", "frequencyPenalty", "frequency_penalty", "seed", "responseMimeType",
        "response_mime_type", "responseSchema", "response_schema", "responseJsonSchema",
        "response_json_schema", "routingConfig", "routing_config", "audioTimestamp",
        "audio_timestamp", "responseModalities", "response_modalities", "mediaResolution",
        "media_resolution", "speechConfig", "speech_config", "thinkingConfig",
        "thinking_config", "imageConfig", "image_config"}


def _unknown(name, where):
    field = "%s.%s" % (where, name) if where else name
    return BadRequest('Invalid JSON payload received. Unknown name "%s" at \'%s\': Cannot find field.'
                      % (name, where or "request"), field)


def _get(obj, camel, snake):
    return obj.get(camel, obj.get(snake))


class Vertex:
    name = "vertex"
    stream_type = "text/event-stream"
    inband_status = 503

    def new_request_id(self):
        return new_uuid()

    def authenticate(self, rq):
        authority = rq.cfg.token_authority
        if authority.enabled:
            value = rq.headers.get("Authorization", "")
            token = value[7:].strip() if value[:7].lower() == "bearer " else None
            problem = authority.check(token)
            if problem is not None:
                reason = {"missing": "CREDENTIALS_MISSING", "expired": "ACCESS_TOKEN_EXPIRED",
                          "unknown": "ACCESS_TOKEN_TYPE_UNSUPPORTED"}[problem]
                raise Reject(401, _MESSAGES[401], kind=reason,
                             headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
        project = rq.cfg.vertex_project
        if project is not None and rq.match["project"] != project:
            raise Reject(403, "Permission 'aiplatform.endpoints.predict' denied on resource "
                              "'//aiplatform.googleapis.com/projects/%s/locations/%s/publishers/"
                              "google/models/%s' (or it may not exist)."
                         % (rq.match["project"], rq.match["location"], rq.match["model"]))
        if rq.match["method"] == "streamGenerateContent" and rq.params.get("alt") != "sse":
            raise Reject(400, "This server streams only with alt=sse.")

    def parse(self, rq, obj):
        for key in obj:
            if key not in _TOP:
                raise _unknown(key, "")
        contents = obj.get("contents")
        if not isinstance(contents, list) or not contents:
            raise BadRequest("Unable to submit request because it has an empty contents field.",
                             "contents")
        turns = []
        for i, content in enumerate(contents):
            where = "contents[%d]" % i
            if not isinstance(content, dict):
                raise BadRequest("%s must be an object" % where, where)
            for key in content:
                if key not in ("role", "parts"):
                    raise _unknown(key, where)
            role = content.get("role")
            if role not in ("user", "model"):
                raise BadRequest("Please use a valid role: user, model.", where + ".role")
            turns.append((role, self._parts_text(content.get("parts"), where + ".parts")))
        system = None
        sys_obj = _get(obj, "systemInstruction", "system_instruction")
        if sys_obj is not None:
            if not isinstance(sys_obj, dict):
                raise BadRequest("systemInstruction must be a Content object", "systemInstruction")
            for key in sys_obj:
                if key not in ("role", "parts"):
                    raise _unknown(key, "system_instruction")
            system = self._parts_text(sys_obj.get("parts"), "systemInstruction.parts")
        max_tokens = None
        gen = _get(obj, "generationConfig", "generation_config")
        if gen is not None:
            if not isinstance(gen, dict):
                raise BadRequest("generationConfig must be an object", "generationConfig")
            for key in gen:
                if key not in _GEN:
                    raise _unknown(key, "generation_config")
            max_tokens = _get(gen, "maxOutputTokens", "max_output_tokens")
            if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
                raise BadRequest("max_output_tokens must be a positive integer.",
                                 "generationConfig.maxOutputTokens")
            for camel, snake, hi in (("temperature", "temperature", 2), ("topP", "top_p", 1)):
                value = _get(gen, camel, snake)
                if value is not None and (not is_num(value) or not 0 <= value <= hi):
                    raise BadRequest("%s must be between 0 and %d." % (camel, hi),
                                     "generationConfig." + camel)
            count = _get(gen, "candidateCount", "candidate_count")
            if count is not None and count != 1:
                raise BadRequest("Only candidateCount=1 is supported by this server.",
                                 "generationConfig.candidateCount")
        if not any(role == "user" for role, _ in turns):
            raise BadRequest("contents must include a user turn.", "contents")
        return Chat(rq.match["model"], turns, system or None, max_tokens,
                    rq.match["method"] == "streamGenerateContent")

    def _parts_text(self, parts, where):
        if not isinstance(parts, list) or not parts:
            raise BadRequest("Unable to submit request because it must include at least one parts "
                             "field, which describes the prompt input.", where)
        texts = []
        for j, part in enumerate(parts):
            pwhere = "%s[%d]" % (where, j)
            if not isinstance(part, dict):
                raise BadRequest("%s must be an object" % pwhere, pwhere)
            data = [k for k in part if k in _PART_DATA]
            for key in part:
                if key not in _PART_DATA and key not in _PART_EXTRA:
                    raise _unknown(key, pwhere)
            if len(data) != 1:
                raise BadRequest("%s must set exactly one of the data fields." % pwhere, pwhere)
            if data[0] == "text":
                if not isinstance(part["text"], str):
                    raise BadRequest("%s.text must be a string" % pwhere, pwhere + ".text")
                texts.append(part["text"])
        return "".join(texts)

    def error(self, rq, status, message=None, kind=None, param=None, fault=None):
        state = _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        if fault is not None and fault.get("type"):
            state = fault.get("type")
        err = {"code": status, "message": message or _MESSAGES.get(status, "Request failed."),
               "status": state}
        if status == 401 and kind:
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": kind,
                               "domain": "googleapis.com",
                               "metadata": {"service": "aiplatform.googleapis.com",
                                            "method": "google.cloud.aiplatform.v1.PredictionService.GenerateContent"}}]
        elif status == 400 and param:
            err["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                               "fieldViolations": [{"field": param, "description": err["message"]}]}]
        return status, self.headers(rq), jbody({"error": err})

    def inband_error(self, rq, status, message=None):
        state = _STATUS.get(status, "INTERNAL")
        return sse({"error": {"code": status, "message": message or _MESSAGES.get(status, "Internal error."),
                              "status": state}}, sep=_SEP)

    def break_piece(self, data):
        return break_json_event(data)

    def headers(self, rq):
        return {"x-vertex-ai-llm-request-type": "shared"}

    def _create_time(self, rq):
        return datetime.datetime.fromtimestamp(rq.created, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.000000Z")

    def _usage(self, ans):
        usage = {"promptTokenCount": ans.input_tokens, "candidatesTokenCount": ans.output_tokens,
                 "totalTokenCount": ans.total_tokens, "trafficType": "ON_DEMAND",
                 "promptTokensDetails": [{"modality": "TEXT", "tokenCount": ans.input_tokens}],
                 "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": ans.output_tokens}]}
        # proto3 JSON leaves out zero-valued counters
        for key in ("promptTokenCount", "candidatesTokenCount", "totalTokenCount"):
            if not usage[key]:
                del usage[key]
        for key in ("promptTokensDetails", "candidatesTokensDetails"):
            if not usage[key][0]["tokenCount"]:
                del usage[key][0]["tokenCount"]
        return usage

    def _envelope(self, rq, chat, candidate, usage):
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": chat.model,
                "createTime": self._create_time(rq), "responseId": rq.response_id}

    def _finish(self, ans):
        return ans.finish_word or ("MAX_TOKENS" if ans.truncated else "STOP")

    def response(self, rq, chat, ans):
        candidate = {"content": {"role": "model", "parts": [{"text": ans.text}]},
                     "finishReason": self._finish(ans), "avgLogprobs": -0.05}
        return jbody(self._envelope(rq, chat, candidate, self._usage(ans)))

    def text_piece(self, rq, chat, chunk, final_of=None):
        candidate = {"content": {"role": "model", "parts": [{"text": chunk}]}}
        usage = {"trafficType": "ON_DEMAND"}
        if final_of is not None:
            candidate["finishReason"] = self._finish(final_of)
            usage = self._usage(final_of)
        return sse(self._envelope(rq, chat, candidate, usage), sep=_SEP)

    def stream(self, rq, chat, ans, chunks):
        chunks = chunks or [""]
        pieces = []
        for chunk in chunks[:-1]:
            pieces.append(("text", self.text_piece(rq, chat, chunk), len(chunk.encode())))
        last = chunks[-1]
        pieces.append(("end", self.text_piece(rq, chat, last, final_of=ans), len(last.encode())))
        return pieces
