"""Pieces shared by every fake provider: the provider-neutral request, the
deterministic answer, text chunking and small encoding helpers."""

import json
import secrets
import string
import uuid


class BadRequest(Exception):
    """The request body is not acceptable; answered 400 in the provider's shape."""

    def __init__(self, message, param=None, kind=None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.kind = kind  # e.g. "json" when the body is not JSON at all


class Reject(Exception):
    """Answer with a provider error before the request body is interpreted
    (authentication, routing, missing headers)."""

    def __init__(self, status, message, kind=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}


class Chat:
    """What the fake needs from any provider's request."""

    def __init__(self, model, turns, system, max_tokens, stream, options=None):
        self.model = model
        self.turns = turns            # (role, text) pairs, roles as the provider names them;
                                      # system text is never among them
        self.system = system          # str or None
        self.max_tokens = max_tokens  # int or None
        self.stream = stream
        self.options = options or {}
        users = [text for role, text in turns if role == "user"]
        self.last_user = users[-1] if users else ""
        self.prompt_bytes = sum(len(t.encode()) for _, t in turns)
        if system:
            self.prompt_bytes += len(system.encode())


class Answer:
    def __init__(self, text, truncated, input_tokens, output_tokens):
        self.text = text
        self.truncated = truncated
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.finish_word = None  # a `finish` fault's word, replacing the provider's own

    @property
    def total_tokens(self):
        return self.input_tokens + self.output_tokens


def tokens_for(nbytes):
    return (nbytes + 3) // 4


LONG_FILLER = "0123456789"


def pad_text(text, size):
    """TEXT followed by the digits 0-9 repeated, up to SIZE UTF-8 bytes in all
    (the `long` fault); a text already that long is returned unchanged."""
    missing = size - len(text.encode())
    if missing <= 0:
        return text
    return text + (LONG_FILLER * (missing // len(LONG_FILLER) + 1))[:missing]


def make_answer(chat, pad_to=None):
    """`echo: <last user text>`, prefixed by the system text, padded to
    PAD_TO bytes when given (the `long` fault), cut to max_tokens*4 bytes on
    a character boundary."""
    text = "echo: " + chat.last_user
    if chat.system:
        text = "[system: %s] %s" % (chat.system, text)
    if pad_to is not None:
        text = pad_text(text, pad_to)
    raw = text.encode()
    truncated = False
    if chat.max_tokens is not None and len(raw) > chat.max_tokens * 4:
        cut = chat.max_tokens * 4
        while cut > 0 and (raw[cut] & 0xC0) == 0x80:
            cut -= 1
        raw = raw[:cut]
        text = raw.decode()
        truncated = True
    return Answer(text, truncated, tokens_for(chat.prompt_bytes), tokens_for(len(raw)))


def chunk_text(text, size, breaks=()):
    """Split text into chunks of at most `size` UTF-8 bytes (at least one
    character each), never inside a character. A chunk also ends at the first
    character boundary at or after each byte offset in `breaks`."""
    size = max(1, size)
    points = sorted(b for b in set(breaks) if b > 0)
    chunks, cur, cur_bytes, offset = [], [], 0, 0
    for ch in text:
        n = len(ch.encode())
        if cur:
            start = offset - cur_bytes
            at_break = any(start < b <= offset for b in points)
            if cur_bytes + n > size or at_break:
                chunks.append("".join(cur))
                cur, cur_bytes = [], 0
        cur.append(ch)
        cur_bytes += n
        offset += n
    if cur:
        chunks.append("".join(cur))
    return chunks


def endless_chunks(text, size):
    """Valid text chunks forever, cycling through `text`."""
    text = text or "x"
    while True:
        for chunk in chunk_text(text + " ", size):
            yield chunk


def jdump(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def jbody(obj):
    return json.dumps(obj, ensure_ascii=False, indent=2).encode() + b"\n"


def sse(obj, event=None, sep="\n\n"):
    """One server-sent event carrying `obj` (a dict, or a raw str)."""
    data = obj if isinstance(obj, str) else jdump(obj)
    head = "event: %s\n" % event if event else ""
    return ("%sdata: %s%s" % (head, data, sep)).encode()


def break_json_event(data):
    """Make one SSE event (or JSON element) unparseable by dropping the two
    characters that close its JSON object."""
    end = data.rstrip(b"\r\n")
    tail = data[len(end):]
    return end[:-2] + tail


def rand_id(n=24, alphabet=string.ascii_letters + string.digits):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_uuid():
    return str(uuid.uuid4())


def text_of_parts(parts, what, text_key="text", type_key="type"):
    """Concatenate the text of typed content parts (OpenAI / Anthropic style)."""
    if not isinstance(parts, list):
        raise BadRequest("%s must be a string or an array of content parts" % what, what)
    out = []
    for i, part in enumerate(parts):
        where = "%s[%d]" % (what, i)
        if not isinstance(part, dict) or not isinstance(part.get(type_key), str):
            raise BadRequest("%s must be an object with a '%s' string" % (where, type_key), where)
        if part[type_key] == "text":
            if not isinstance(part.get(text_key), str):
                raise BadRequest("%s.%s must be a string" % (where, text_key), where + "." + text_key)
            out.append(part[text_key])
    return "".join(out)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_unknown(obj, known, where, fmt="Unrecognized request argument supplied: %s"):
    for key in obj:
        if key not in known:
            raise BadRequest(fmt % key, (where + "." if where else "") + key)


def load_json_object(body, what="request body"):
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("%s is not valid JSON" % what, kind="json")
    if not isinstance(obj, dict):
        raise BadRequest("%s must be a JSON object" % what, kind="json")
    return obj
