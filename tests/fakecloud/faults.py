"""Fault directives: `[[fault:NAME k=v ...]]` inside a prompt (or given on the
command line) and the per-prompt counters that decide whether one applies."""

import re
import shlex
import threading

from common import BadRequest

# Faults that decide the shape of the whole answer: the first active one wins.
TERMINAL = ("status", "reset", "silence", "cut", "malformed", "no_done", "garbage",
            "endless", "inband_error", "content_filter")
# Faults that change timing, transport or the finish word, or lengthen the
# answer (`long`), without breaking it; they combine with anything.
MODIFIERS = ("latency", "slow_first_byte", "stall", "fragment", "finish", "gate", "long")

_ARG_TYPES = {
    "code": int, "times": int, "after": int, "bytes": int, "retry_after_ms": int,
    "retry_after": float, "seconds": float,
    "message": str, "provider": str, "path": str, "model": str, "type": str,
    "should_retry": str, "reason": str, "name": str,
}
_DIRECTIVE_RE = re.compile(r"\[\[fault:([A-Za-z_]+)([^\]]*)\]\]")


class Directive:
    def __init__(self, name, args, text):
        self.name = name
        self.args = args
        self.text = text          # canonical text: part of the counter key

    def get(self, key, default=None):
        return self.args.get(key, default)

    def matches(self, provider, path, model):
        if self.name == "content_filter" and provider != "azure":
            return False
        wanted = self.args.get("provider")
        if wanted and provider not in wanted.split(","):
            return False
        if self.args.get("path") and self.args["path"] not in path:
            return False
        if self.args.get("model") and self.args["model"] != model:
            return False
        return True


def _split_args(rest):
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def make_directive(name, rest):
    if name not in TERMINAL and name not in MODIFIERS:
        raise BadRequest("fakecloud: unknown fault directive '%s'" % name)
    args = {}
    for word in _split_args(rest):
        key, eq, value = word.partition("=")
        if not eq or key not in _ARG_TYPES:
            raise BadRequest("fakecloud: bad argument '%s' in fault '%s'" % (word, name))
        try:
            args[key] = _ARG_TYPES[key](value)
        except ValueError:
            raise BadRequest("fakecloud: argument '%s' of fault '%s' must be a number" % (key, name))
    if name == "finish" and not args.get("reason"):
        raise BadRequest("fakecloud: fault 'finish' needs reason=WORD")
    if name == "long" and args.get("bytes", -1) < 0:
        raise BadRequest("fakecloud: fault 'long' needs bytes=N")
    if "retry_after" in args:
        args["retry_after_text"] = rest_value(rest, "retry_after")
    return Directive(name, args, ("%s %s" % (name, rest.strip())).strip())


def rest_value(rest, key):
    for word in _split_args(rest):
        if word.startswith(key + "="):
            return word[len(key) + 1:]
    return None


def parse_prompt(text):
    """All directives found in a prompt, in order."""
    return [make_directive(m.group(1), m.group(2)) for m in _DIRECTIVE_RE.finditer(text)]


def parse_spec(spec):
    """A directive from the command line: `[[fault:NAME ...]]` or `NAME k=v ...`."""
    spec = spec.strip()
    found = parse_prompt(spec)
    if found:
        return found
    name, _, rest = spec.partition(" ")
    return [make_directive(name, rest)]


class Plan:
    """What the faults decided for one request."""

    def __init__(self):
        self.main = None          # a terminal Directive or None
        self.latency = None       # seconds, overrides --latency
        self.slow = 0.0           # extra seconds before the first byte
        self.stall = None         # Directive
        self.fragment = None      # bytes per write, or None
        self.finish = None        # the provider's finish word to use instead of its own
        self.gate = None          # name of the gate to wait for before the first byte
        self.long = None          # bytes the answer's text is padded to, or None
        self.names = []           # every active directive name, for logs and stats

    def first_byte_delay(self, default_latency):
        base = self.latency if self.latency is not None else default_latency
        return base + self.slow


class FaultBook:
    """Counts, per prompt text and directive, how many requests it has seen."""

    def __init__(self, defaults=()):
        self.defaults = list(defaults)
        self._counts = {}
        self._lock = threading.Lock()

    def reset(self):
        with self._lock:
            self._counts.clear()

    def plan(self, prompt_key, directives, provider, path, model=None):
        plan = Plan()
        for d in list(directives) + self.defaults:
            if not d.matches(provider, path, model):
                continue
            with self._lock:
                key = (prompt_key, d.text)
                count = self._counts.get(key, 0) + 1
                self._counts[key] = count
            times = d.get("times")
            if times is not None and count > times:
                continue
            plan.names.append(d.name)
            if d.name in TERMINAL:
                if plan.main is None:
                    plan.main = d
            elif d.name == "latency":
                plan.latency = d.get("seconds", 0.0)
            elif d.name == "slow_first_byte":
                plan.slow += d.get("seconds", 5.0)
            elif d.name == "stall":
                if plan.stall is None:
                    plan.stall = d
            elif d.name == "finish":
                if plan.finish is None:
                    plan.finish = d.get("reason")
            elif d.name == "fragment":
                if plan.fragment is None:
                    plan.fragment = max(1, d.get("bytes", 1))
            elif d.name == "gate":
                if plan.gate is None:
                    plan.gate = d.get("name", "")
            elif d.name == "long":
                if plan.long is None:
                    plan.long = d.get("bytes")
        return plan
