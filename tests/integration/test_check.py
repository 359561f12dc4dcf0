"""promptfs --check CONFIG (issue 10 item 15): the config's syntax and
every rule checked without its secrets being present, every error
printed as SPEC §1 prints one (file, JSON path, reason), exit 0 or 1,
nothing mounted."""
import json
import os
import subprocess
import tempfile

import pytest

from conftest import PROMPTFS, sanitizer_env, sanitizer_reports

# Variables no test environment sets: --check must not need them.
UNSET = ("PFS_CHECK_UNSET_OPENAI", "PFS_CHECK_UNSET_AZURE", "ANTHROPIC_API_KEY",
         "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
         "AWS_SHARED_CREDENTIALS_FILE", "GOOGLE_APPLICATION_CREDENTIALS")


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="promptfs-check-")
    os.chmod(d, 0o755)
    os.mkdir(os.path.join(d, "mnt"))
    os.mkdir(os.path.join(d, "home"))
    yield d
    reports = sanitizer_reports(d)
    subprocess.run(["fusermount3", "-uz", os.path.join(d, "mnt")], capture_output=True)
    subprocess.run(["rm", "-rf", d])
    assert not reports, "sanitizer report:\n" + reports[-8000:]


def check(workdir, *args):
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["HOME"] = os.path.join(workdir, "home")  # no ~/.aws/credentials there
    return subprocess.run([PROMPTFS, "--check", *args], capture_output=True, timeout=30,
                          env=sanitizer_env(env, workdir))


def write(path, cfg, mode=0o644):
    with open(path, "w") as f:
        json.dump(cfg, f)
    os.chmod(path, mode)


def valid_config(workdir):
    """Five clouds whose every secret is absent here: two unset variables,
    two provider defaults (ANTHROPIC_API_KEY, ~/.aws/credentials) and a
    service-account key file that does not exist."""
    return {"clouds": {
        "openai": {"provider": "openai", "auth": {"api_key_env": "PFS_CHECK_UNSET_OPENAI"},
                   "regions": {"us": {"geo": "us", "models": {"gpt-4o": {}}}}},
        "azure": {"provider": "azure", "auth": {"api_key_env": "PFS_CHECK_UNSET_AZURE"},
                  "regions": {"westeurope": {"geo": ["eu"],
                                             "endpoint": "https://contoso.openai.azure.com",
                                             "models": {"gpt-4o": {"id": "gpt-4o-prod"}}}}},
        "anthropic": {"provider": "anthropic",
                      "regions": {"us": {"geo": "us", "models": {
                          "claude-sonnet": {"id": "claude-sonnet-4-20250514"}}}}},
        "aws": {"provider": "bedrock",
                "regions": {"eu-central-1": {"geo": "eu", "models": {
                    "nova-pro": {"id": "amazon.nova-pro-v1:0"}}}}},
        "gcp": {"provider": "vertex", "project": "acme-prod",
                "auth": {"service_account_file": os.path.join(workdir, "absent-sa.json")},
                "regions": {"europe-west4": {"geo": "eu", "models": {"gemini-2.0-flash": {}}}}},
    }}


def assert_nothing_mounted(workdir, state):
    assert not os.path.ismount(os.path.join(workdir, "mnt"))
    assert not os.path.exists(state)


def test_check_valid_config_with_absent_secrets(workdir):
    cfg = os.path.join(workdir, "clouds.json")
    state = os.path.join(workdir, "state")
    write(cfg, valid_config(workdir))
    # the mount itself refuses it: the first absent secret is an error there
    mount = subprocess.run([PROMPTFS, "-f", "-o", "state_dir=" + state, cfg,
                            os.path.join(workdir, "mnt")],
                           capture_output=True, timeout=30,
                           env=sanitizer_env({k: v for k, v in os.environ.items()
                                              if k not in UNSET}, workdir))
    assert mount.returncode == 1
    assert b"PFS_CHECK_UNSET_OPENAI is not set" in mount.stderr

    r = check(workdir, cfg)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert r.stdout.decode() == (
        "%s: OK: 5 clouds, 5 regions, 5 models; 5 secrets not present here, not checked\n"
        % cfg)
    # the mount's own command line with --check added mounts nothing either
    r = check(workdir, "-o", "state_dir=" + state, cfg, os.path.join(workdir, "mnt"))
    assert r.returncode == 0, r.stderr
    assert_nothing_mounted(workdir, state)


def test_check_reports_all_three_errors(workdir):
    cfg = os.path.join(workdir, "clouds.json")
    state = os.path.join(workdir, "state")
    config = valid_config(workdir)
    # three independent errors, in three clouds
    config["clouds"]["openai"]["regions"]["us"]["models"]["gpt-4o"]["temperature"] = 0.2
    del config["clouds"]["aws"]["regions"]["eu-central-1"]["geo"]
    config["clouds"]["gcp"]["regions"]["europe-west4"]["endpoint"] = "ftp://vertex.example"
    write(cfg, config)
    r = check(workdir, "-o", "state_dir=" + state, cfg, os.path.join(workdir, "mnt"))
    assert r.returncode == 1
    assert r.stdout == b""
    assert r.stderr.decode().splitlines() == [
        "promptfs: %s: clouds.openai.regions.us.models.gpt-4o.temperature: unknown key" % cfg,
        "promptfs: %s: clouds.aws.regions.eu-central-1.geo: required" % cfg,
        "promptfs: %s: clouds.gcp.regions.europe-west4.endpoint: must start with http:// or "
        "https://" % cfg,
        "promptfs: %s: 3 errors" % cfg,
    ]
    assert_nothing_mounted(workdir, state)


def test_check_applies_the_mode_rules_of_present_secrets(workdir):
    """SPEC §3.2: a secret file readable by group or others, and an inline
    secret in a config others may read, are errors for --check too."""
    cfg = os.path.join(workdir, "clouds.json")
    key = os.path.join(workdir, "openai.key")
    with open(key, "w") as f:
        f.write("sk-check-SECRET-1\n")
    os.chmod(key, 0o640)
    config = valid_config(workdir)
    config["clouds"]["openai"]["auth"] = {"api_key_file": key}
    config["clouds"]["anthropic"]["auth"] = {"api_key": "sk-ant-check-SECRET-2"}
    write(cfg, config, 0o644)
    r = check(workdir, cfg)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.splitlines() == [
        "promptfs: %s: clouds.openai.auth.api_key_file: %s is readable by group or others "
        "(mode 0640); chmod 600 it" % (cfg, key),
        "promptfs: %s: clouds.anthropic.auth.api_key: inline secret refused: %s is mode "
        "0644; it must be 0600 or stricter" % (cfg, cfg),
        "promptfs: %s: 2 errors" % cfg,
    ]
    assert "SECRET" not in err

    os.chmod(key, 0o600)
    os.chmod(cfg, 0o600)
    r = check(workdir, cfg)
    assert r.returncode == 0, r.stderr
    assert b"; 3 secrets not present here" in r.stdout


def test_check_syntax_error_and_usage(workdir):
    cfg = os.path.join(workdir, "clouds.json")
    with open(cfg, "w") as f:
        f.write('{"clouds": {"openai": }}\n')
    r = check(workdir, cfg)
    assert r.returncode == 1
    assert r.stderr.decode().splitlines() == [
        "promptfs: %s: line 1 column 23: unexpected token" % cfg,
        "promptfs: %s: 1 error" % cfg]
    r = check(workdir)
    assert r.returncode == 1
    assert b"--check needs CONFIG" in r.stderr
    r = subprocess.run([PROMPTFS, "-h"], capture_output=True, timeout=30)
    assert r.returncode == 0 and b"--check CONFIG" in r.stdout


def test_check_the_example_config(workdir):
    """examples/clouds.json, which the README points to, is valid."""
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "clouds.json")
    r = check(workdir, os.path.abspath(example))
    assert r.returncode == 0, r.stderr
    assert b": OK: 6 clouds" in r.stdout
