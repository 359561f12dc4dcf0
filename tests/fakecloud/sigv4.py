"""AWS Signature Version 4, recomputed by the receiving side.

The fake Bedrock verifies requests with these functions; they follow the
algorithm exactly as the project's wire reference (§6) describes it,
including the double URI-encoding of the path for non-S3 services."""

import datetime
import hashlib
import hmac
import re
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


class SigV4Error(Exception):
    """Why a request's signature is refused. `kind` is the AWS error type."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def uri_encode(value, keep_slash=False):
    if isinstance(value, str):
        value = value.encode("utf-8")
    out = []
    for byte in value:
        if byte in _UNRESERVED or (keep_slash and byte == 0x2F):
            out.append(chr(byte))
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def normalize_path(path):
    """RFC 3986 dot-segment removal plus collapsing of repeated slashes."""
    trailing = path.endswith("/") and path not in ("", "/")
    segments = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    out = "/" + "/".join(segments)
    if trailing and segments and not out.endswith("/"):
        out += "/"
    if path.endswith(("/.", "/..")) and out != "/":
        out += "/"
    return out


def canonical_uri(raw_path, normalize=True, double_encode=True):
    path = raw_path or "/"
    if normalize:
        path = normalize_path(path)
    if double_encode:
        return uri_encode(path, keep_slash=True)
    return path


def canonical_query(raw_query):
    if not raw_query:
        return ""
    pairs = []
    for item in raw_query.split("&"):
        if item == "":
            continue
        key, _, value = item.partition("=")
        key = uri_encode(urllib.parse.unquote_to_bytes(key))
        value = uri_encode(urllib.parse.unquote_to_bytes(value))
        pairs.append((key, value))
    pairs.sort()
    return "&".join("%s=%s" % kv for kv in pairs)


def _clean_value(value):
    # obsolete line folding counts as whitespace; runs of whitespace become one space
    return re.sub(r"\s+", " ", value.strip())


def canonical_headers(header_pairs, signed_names):
    """header_pairs: (name, value) in the order received, duplicates allowed."""
    values = {}
    for name, value in header_pairs:
        values.setdefault(name.lower(), []).append(_clean_value(value))
    lines = []
    for name in signed_names:
        lines.append("%s:%s\n" % (name, ",".join(values.get(name, []))))
    return "".join(lines)


def canonical_request(method, raw_path, raw_query, header_pairs, signed_names,
                      payload_hash, normalize=True, double_encode=True):
    return "\n".join([
        method,
        canonical_uri(raw_path, normalize, double_encode),
        canonical_query(raw_query),
        canonical_headers(header_pairs, signed_names),
        ";".join(signed_names),
        payload_hash,
    ])


def string_to_sign(amz_date, scope, creq):
    return "\n".join([ALGORITHM, amz_date, scope,
                      hashlib.sha256(creq.encode("utf-8")).hexdigest()])


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def signature(secret, date, region, service, sts):
    return hmac.new(signing_key(secret, date, region, service),
                    sts.encode("utf-8"), hashlib.sha256).hexdigest()


_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-fA-F]+)\s*$")


def parse_authorization(value):
    m = _AUTH_RE.match(value.strip())
    if not m:
        raise SigV4Error("IncompleteSignatureException",
                         "Authorization header requires 'Credential', 'SignedHeaders' and "
                         "'Signature' parameters with algorithm AWS4-HMAC-SHA256.")
    cred = m.group(1).split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise SigV4Error("IncompleteSignatureException",
                         "Credential must have the form AKID/yyyymmdd/region/service/aws4_request.")
    return {
        "access_key": cred[0], "date": cred[1], "region": cred[2], "service": cred[3],
        "signed_headers": m.group(2).split(";"), "signature": m.group(3).lower(),
    }


def parse_amz_date(value):
    try:
        return datetime.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return None


def verify(method, raw_path, raw_query, header_pairs, body, *, access_key, secret_key,
           service, region=None, session_token=None, max_skew=300, now=None):
    """Check one request; return the parsed credential fields or raise SigV4Error."""
    headers = {}
    for name, value in header_pairs:
        headers.setdefault(name.lower(), value)
    auth = headers.get("authorization")
    if auth is None:
        raise SigV4Error("MissingAuthenticationTokenException", "Missing Authentication Token")
    parsed = parse_authorization(auth)
    if parsed["access_key"] != access_key:
        raise SigV4Error("UnrecognizedClientException",
                         "The security token included in the request is invalid.")
    token = headers.get("x-amz-security-token")
    if session_token is not None or token is not None:
        if token is None or session_token is None or not hmac.compare_digest(
                token.strip().encode(), session_token.encode()):
            raise SigV4Error("UnrecognizedClientException",
                             "The security token included in the request is invalid.")
        if "x-amz-security-token" not in parsed["signed_headers"]:
            raise SigV4Error("InvalidSignatureException",
                             "'x-amz-security-token' must be a signed header.")
    signed = parsed["signed_headers"]
    if signed != sorted(signed) or any(h != h.lower() for h in signed):
        raise SigV4Error("InvalidSignatureException",
                         "SignedHeaders must be lowercase and sorted.")
    for required in ("host", "x-amz-date"):
        if required not in signed:
            raise SigV4Error("InvalidSignatureException",
                             "'%s' must be a signed header." % required)
    amz_date = headers.get("x-amz-date", "").strip()
    when = parse_amz_date(amz_date)
    if when is None:
        raise SigV4Error("IncompleteSignatureException",
                         "X-Amz-Date must be in the format yyyyMMdd'T'HHmmss'Z'.")
    if parsed["date"] != amz_date[:8]:
        raise SigV4Error("InvalidSignatureException",
                         "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                         "version of date from HTTP: '%s' != '%s'." % (parsed["date"], amz_date[:8]))
    if parsed["service"] != service:
        raise SigV4Error("InvalidSignatureException",
                         "Credential should be scoped to correct service: '%s'." % service)
    if region is not None and parsed["region"] != region:
        raise SigV4Error("InvalidSignatureException",
                         "Credential should be scoped to a valid region.")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if abs((now - when).total_seconds()) > max_skew:
        raise SigV4Error("InvalidSignatureException",
                         "Signature expired: %s is now earlier than %s (%s - 5 min.)" % (
                             amz_date, (now - datetime.timedelta(seconds=max_skew)).strftime("%Y%m%dT%H%M%SZ"),
                             now.strftime("%Y%m%dT%H%M%SZ")))
    body_hash = hashlib.sha256(body).hexdigest()
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared.strip() != body_hash:
        raise SigV4Error("InvalidSignatureException",
                         "The provided 'x-amz-content-sha256' header does not match what was computed.")
    creq = canonical_request(method, raw_path, raw_query, header_pairs, signed, body_hash)
    scope = "%s/%s/%s/aws4_request" % (parsed["date"], parsed["region"], parsed["service"])
    sts = string_to_sign(amz_date, scope, creq)
    expected = signature(secret_key, parsed["date"], parsed["region"], parsed["service"], sts)
    if not hmac.compare_digest(expected, parsed["signature"]):
        raise SigV4Error("InvalidSignatureException",
                         "The request signature we calculated does not match the signature you "
                         "provided. Check your AWS Secret Access Key and signing method. Consult "
                         "the service documentation for details.\n\nThe Canonical String for this "
                         "request should have been\n'%s'\n\nThe String-to-Sign should have been\n'%s'\n"
                         % (creq, sts))
    return parsed
