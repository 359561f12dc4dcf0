"""The Google side of the service-account JWT bearer flow: verify an RS256
assertion, issue short-lived access tokens, and check them later.
Also creates throw-away service-account keys for tests."""

import base64
import json
import os
import secrets
import threading
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
MAX_LIFETIME = 3600
CLOCK_SKEW = 300
DEFAULT_EMAIL = "promptfs-test@fake-project.iam.gserviceaccount.com"


def b64url_encode(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    if isinstance(text, str):
        text = text.encode("ascii")
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


class GrantError(Exception):
    def __init__(self, status, error, description):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


def _invalid_grant(description):
    return GrantError(400, "invalid_grant", description)


class TokenAuthority:
    """Verifies JWT assertions from one service account and remembers the
    access tokens it issued."""

    def __init__(self, public_key_pem=None, email=None, key_id=None, token_uri=None,
                 ttl=3600, static_token=None):
        self.public_key = (serialization.load_pem_public_key(public_key_pem)
                           if public_key_pem else None)
        self.email = email
        self.key_id = key_id
        self.token_uri = token_uri
        self.ttl = ttl
        self.static_token = static_token
        self._tokens = {}
        self._lock = threading.Lock()

    @property
    def enabled(self):
        """Whether Vertex requests must carry a valid token at all."""
        return self.public_key is not None or self.static_token is not None

    def exchange(self, form_body, now=None):
        """Handle a token request; return the JSON answer or raise GrantError.
        The token lives `ttl` seconds from this moment, to the fraction of
        a second: a 2 s token must not die 1.1 s after it was issued."""
        issued = now if now is not None else time.time()
        now = int(issued)
        try:
            form = urllib.parse.parse_qs(form_body.decode("ascii"), keep_blank_values=True,
                                         strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise GrantError(400, "invalid_request", "The request body is not form-encoded.")
        grant = form.get("grant_type", [""])[0]
        if grant != GRANT_TYPE:
            raise GrantError(400, "unsupported_grant_type", "Invalid grant_type: %s" % grant)
        assertion = form.get("assertion", [""])[0]
        if self.public_key is None:
            raise GrantError(401, "invalid_client", "No service account is known to this server.")
        self._verify_assertion(assertion, now)
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        with self._lock:
            self._prune(now)
            self._tokens[token] = issued + self.ttl
        return {"access_token": token, "expires_in": self.ttl, "token_type": "Bearer"}

    def _verify_assertion(self, assertion, now):
        parts = assertion.split(".")
        if len(parts) != 3:
            raise _invalid_grant("Invalid JWT: the assertion is not a compact JWS.")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except ValueError:
            raise _invalid_grant("Invalid JWT: the assertion is not valid base64url JSON.")
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _invalid_grant("Invalid JWT: header and claims must be JSON objects.")
        if header.get("alg") != "RS256":
            raise _invalid_grant("Invalid JWT: alg must be RS256.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid_grant("Invalid JWT: the header has no kid.")
        if self.key_id is not None and kid != self.key_id:
            raise _invalid_grant("Invalid JWT Signature.")
        try:
            self.public_key.verify(sig, (parts[0] + "." + parts[1]).encode("ascii"),
                                   padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise _invalid_grant("Invalid JWT Signature.")
        if claims.get("iss") != self.email:
            raise _invalid_grant("Invalid grant: account not found")
        if claims.get("aud") != self.token_uri:
            raise _invalid_grant("Invalid JWT: audience must be %s" % self.token_uri)
        scope = claims.get("scope")
        if not isinstance(scope, str) or CLOUD_PLATFORM not in scope.split():
            raise GrantError(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        iat, exp = claims.get("iat"), claims.get("exp")
        if (not isinstance(iat, int) or not isinstance(exp, int) or isinstance(iat, bool)
                or isinstance(exp, bool) or exp <= iat or exp - iat > MAX_LIFETIME
                or iat > now + CLOCK_SKEW or exp <= now):
            raise _invalid_grant(
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                "timeframe. Check your iat and exp values in the JWT claim.")
        return claims

    def _prune(self, now):
        old = [t for t, exp in self._tokens.items() if exp < now - 3600]
        for t in old:
            del self._tokens[t]

    def check(self, token, now=None):
        """None when the bearer token is good, else 'missing', 'expired' or 'unknown'."""
        if not token:
            return "missing"
        if self.static_token is not None and secrets.compare_digest(
                token.encode(), self.static_token.encode()):
            return None
        now = now if now is not None else time.time()
        with self._lock:
            exp = self._tokens.get(token)
        if exp is None:
            return "unknown"
        if now >= exp:
            return "expired"
        return None


def make_sa_key(directory, token_uri, email=DEFAULT_EMAIL, project="fake-project"):
    """Write DIR/sa.json (mode 0600) and DIR/sa-public.pem; return their paths."""
    os.makedirs(directory, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10 ** 20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    sa_path = os.path.join(directory, "sa.json")
    write_private_json(sa_path, info)
    pub_path = os.path.join(directory, "sa-public.pem")
    with open(pub_path, "wb") as f:
        f.write(pub)
    return sa_path, pub_path


def write_private_json(path, obj):
    """Replace `path` atomically with a mode-0600 JSON file."""
    tmp = "%s.tmp%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_sa_json(path):
    """(public key PEM, client_email, private_key_id) of a service-account key file."""
    with open(path) as f:
        info = json.load(f)
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return pub, info["client_email"], info.get("private_key_id"), info


def sign_jwt(private_key_pem, key_id, claims):
    """An RS256 JWT (used by the self-test to play the client's part)."""
    key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    header = {"alg": "RS256", "typ": "JWT", "kid": key_id}
    signing_input = (b64url_encode(json.dumps(header).encode()) + "."
                     + b64url_encode(json.dumps(claims).encode()))
    sig = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url_encode(sig)
