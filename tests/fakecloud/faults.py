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
    "retry_after": float, "seconds": float, "reset_after": float,
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
        self.rules = []           # ids of the run-time rules that applied

    def first_byte_delay(self, default_latency):
        base = self.latency if self.latency is not None else default_latency
        return base + self.slow


class Rule:
    """Faults set at run time (`POST /_faults`) for every request to the
    deployments a selector names: provider(s), model, path substring. Its
    `times=` counts the rule's own requests, whatever their prompt."""

    def __init__(self, rule_id, provider, model, path, directives):
        self.id = rule_id
        self.provider = provider or None
        self.model = model or None
        self.path = path or None
        self.directives = directives

    def selector(self):
        return (self.provider, self.model, self.path)

    def matches(self, provider, path, model):
        if self.provider and provider not in self.provider.split(","):
            return False
        if self.model and self.model != model:
            return False
        if self.path and self.path not in path:
            return False
        return True

    def describe(self):
        return {"id": self.id, "provider": self.provider, "model": self.model, "path": self.path,
                "faults": [d.text for d in self.directives]}


class FaultBook:
    """Counts, per prompt text and directive, how many requests it has seen;
    holds the run-time rules."""

    def __init__(self, defaults=()):
        self.defaults = list(defaults)
        self._counts = {}
        self._rules = []
        self._next_rule = 1
        self._lock = threading.Lock()

    def reset(self):
        """Counters zeroed and run-time rules removed: as at start."""
        with self._lock:
            self._counts.clear()
            self._rules = []

    def set_rule(self, provider, model, path, directives):
        """Sets the faults of the selector (provider, model, path), replacing
        its earlier rule (and its counters); no directives removes it.
        Returns the rule, or None when removed."""
        with self._lock:
            selector = (provider or None, model or None, path or None)
            for old in [r for r in self._rules if r.selector() == selector]:
                self._rules.remove(old)
                for key in [k for k in self._counts if k[0] == ("rule", old.id)]:
                    del self._counts[key]
            if not directives:
                return None
            rule = Rule(self._next_rule, provider, model, path, list(directives))
            self._next_rule += 1
            self._rules.append(rule)
            return rule

    def clear_rules(self):
        with self._lock:
            for rule in self._rules:
                for key in [k for k in self._counts if k[0] == ("rule", rule.id)]:
                    del self._counts[key]
            self._rules = []

    def rules(self):
        with self._lock:
            return [r.describe() for r in self._rules]

    def plan(self, prompt_key, directives, provider, path, model=None):
        """The faults for one request: the prompt's own directives first,
        then the run-time rules of its deployment, then --fault-default."""
        plan = Plan()
        with self._lock:
            ruled = [(("rule", r.id), d, r) for r in self._rules
                     if r.matches(provider, path, model) for d in r.directives]
        candidates = ([(prompt_key, d, None) for d in directives] + ruled +
                      [(prompt_key, d, None) for d in self.defaults])
        for counter, d, rule in candidates:
            if not d.matches(provider, path, model):
                continue
            with self._lock:
                key = (counter, d.text)
                count = self._counts.get(key, 0) + 1
                self._counts[key] = count
            times = d.get("times")
            if times is not None and count > times:
                continue
            plan.names.append(d.name)
            if rule is not None and rule.id not in plan.rules:
                plan.rules.append(rule.id)
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
