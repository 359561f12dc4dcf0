"""Real TLS to the backends: certificates are always verified; cafile=
adds a trusted CA (SPEC §2)."""
import os
import subprocess

import pytest

from conftest import FakeCloud, sh, wait_finished


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_cloud(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tls"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=promptfs test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "ext", "-out", "server.pem", cwd=d)
    cloud = FakeCloud(d, ["--tls", os.path.join(d, "server.pem"), os.path.join(d, "server.key")])
    cloud.url = "https://127.0.0.1:%d" % cloud.port
    cloud.ca = os.path.join(d, "ca.pem")
    yield cloud
    cloud.stop()


def tls_config(url):
    return {"clouds": {"secure": {"provider": "openai",
                                  "auth": {"api_key_env": "PFS_TEST_OPENAI_KEY"},
                                  "regions": {"eu": {"geo": "eu", "endpoint": url + "/v1",
                                                     "models": {"m": {}}}}}}}


def test_https_backend_with_cafile(mount_factory, tls_cloud):
    m = mount_factory(config=tls_config(tls_cloud.url), options=("cafile=" + tls_cloud.ca,))
    d = m.model("secure", "eu", "m")
    sh("echo 'over TLS' > %s/t.prompt" % d)
    assert sh("cat %s/t.response" % d).stdout == b"echo: over TLS\n"


def test_untrusted_certificate_fails_without_retry(mount_factory, tls_cloud):
    m = mount_factory(config=tls_config(tls_cloud.url))
    d = m.model("secure", "eu", "m")
    sh("echo 'who are you' > %s/u.prompt" % d)
    r = sh("cat %s/u.response" % d, check=False)
    assert r.returncode != 0 and b"Input/output error" in r.stderr
    meta = wait_finished(d, "u")
    assert [a["outcome"] for a in meta["attempts"]] == ["tls"]
    assert "TLS" in open(d + "/u.error").readline()
