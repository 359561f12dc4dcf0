"""Policies enforced at submission (SPEC §5.1, §6.2, §6.4): a deployment the
providers or residency exclude is refused at open(O_CREAT) and rename()
with EACCES, a prompt past max_prompt_bytes at write() with EFBIG, a
request whose worst case exceeds max_request_usd (or whose price is not
known) at close() with EDQUOT; every refusal says in NAME.error which
.policy refused and why, and nothing refused reaches a provider. What a
policy sets (max_output_tokens, temperature, system, retries) reaches the
request and the plan."""
import errno
import hashlib
import json
import os
import urllib.request

import pytest

from conftest import read_all, read_meta, sh, wait_finished


def setpolicy(path, key, value):
    os.setxattr(path, "user.policy." + key, value.encode())


def last_request(fake, text):
    digest = hashlib.sha256(text.encode()).hexdigest()
    url = "%s/_last?prompt=%s&provider=openai" % (fake.url, digest)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["body"]


def refusal(d, name):
    return open(os.path.join(d, name + ".error")).readline()


def test_excluded_provider_is_eacces_at_create_and_nothing_is_sent(mnt, fake):
    cloud = os.path.join(mnt.path, "openai")
    setpolicy(cloud, "providers", "azure")
    d = mnt.model()
    text = "never sent %s" % id(mnt)
    with pytest.raises(OSError) as e:
        os.open(d + "/x.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    assert e.value.errno == errno.EACCES
    assert refusal(d, "x") == ("The prompt was refused by %s/openai/.policy: providers does "
                               "not include openai, the cloud of openai/us/gpt-4o.\n" % mnt.path)
    r = sh("echo '%s' > %s/y.prompt" % (text, d), check=False)
    assert r.returncode != 0 and b"Permission denied" in r.stderr
    assert fake.requests_for(text + "\n") == 0
    assert not os.path.exists(d + "/y.prompt")


def test_excluded_residency_is_eacces_at_rename_and_the_file_stays(mnt):
    setpolicy(mnt.path, "residency", "eu")
    d = mnt.model()
    os.mkdir(d + "/ws")
    with open(d + "/ws/draft.txt", "w") as f:
        f.write("hello")
    with pytest.raises(OSError) as e:
        os.rename(d + "/ws/draft.txt", d + "/ws/q.prompt")
    assert e.value.errno == errno.EACCES
    assert os.path.exists(d + "/ws/draft.txt")
    assert "refused by %s/.policy: residency" % mnt.path in refusal(d + "/ws", "q")


def test_allowed_deployment_answers_and_a_narrower_workspace_refuses(mnt):
    setpolicy(mnt.path, "providers", "openai,local")
    d = mnt.model()
    sh("echo allowed > %s/ok.prompt" % d)
    assert open(d + "/ok.response").read() == "echo: allowed\n"
    os.mkdir(d + "/team")
    setpolicy(d + "/team", "providers", "local")
    with pytest.raises(OSError) as e:
        os.open(d + "/team/no.prompt", os.O_WRONLY | os.O_CREAT, 0o644)
    assert e.value.errno == errno.EACCES
    assert "refused by %s/openai/us/gpt-4o/team/.policy" % mnt.path in refusal(d + "/team", "no")


def test_max_prompt_bytes_is_efbig_at_write(mnt, fake):
    d = mnt.model()
    setpolicy(d, "max_prompt_bytes", "10")
    fd = os.open(d + "/big.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with pytest.raises(OSError) as e:
        os.write(fd, b"01234567890")
    assert e.value.errno == errno.EFBIG
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EFBIG
    assert refusal(d, "big") == ("The prompt was refused by %s/.policy: max_prompt_bytes 10, "
                                 "and it is larger.\n" % d)
    assert not os.path.exists(d + "/big.response")
    with open(d + "/fits.prompt", "w") as f:
        f.write("0123456789")
    assert read_all(d + "/fits.response") == (b"echo: 0123456789", 0)


def test_unknown_price_under_a_cost_cap_is_edquot_at_open(mnt, fake):
    d = mnt.model("local", "localhost", "llama3.2")
    setpolicy(d, "max_request_usd", "1")
    text = "no price known %s" % id(mnt)
    with pytest.raises(OSError) as e:
        os.open(d + "/p.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    assert e.value.errno == errno.EDQUOT
    r = sh("echo '%s' > %s/p.prompt" % (text, d), check=False)
    assert r.returncode == 1 and b"Disk quota exceeded" in r.stderr
    line = refusal(d, "p")
    assert line.startswith("The prompt was refused by %s/.policy: max_request_usd 1" % d)
    assert "price of local/localhost/llama3.2 is not known" in line
    assert fake.requests_for(text) == 0
    assert not os.path.exists(d + "/p.response")


def test_worst_case_over_the_cap_is_edquot_as_early_as_known(mnt, fake):
    d = mnt.model()  # gpt-4o: 2.5 and 10 USD per million tokens, from the catalog
    setpolicy(d, "max_output_tokens", "100")
    # even an empty prompt costs more: refused at open(), as echo shows
    setpolicy(d, "max_request_usd", "0.0000001")
    r = sh("echo 'too dear' > %s/dear.prompt" % d, check=False)
    assert r.returncode == 1 and b"Disk quota exceeded" in r.stderr
    line = refusal(d, "dear")
    assert "max_request_usd 0.0000001, this request may cost up to" in line
    assert "up to 100 tokens out" in line
    # an empty prompt costs 0.00102 at most; 0.001121 leaves room for 40
    # bytes of text: a longer text fails at the write() that passes it
    setpolicy(d, "max_request_usd", "0.001121")
    text = "x" * 100
    r = sh("echo %s > %s/long.prompt" % (text, d), check=False)
    assert r.returncode == 1 and b"write error: Disk quota exceeded" in r.stderr
    assert refusal(d, "long") == (
        "The prompt was refused by %s/.policy: max_request_usd, the worst case of a prompt of "
        "more than 40 bytes exceeds it.\n" % d)
    assert not os.path.exists(d + "/long.response")
    # a JSON request is costed by its messages, at close()
    body = json.dumps({"messages": [{"role": "user", "content": text}]})
    fd = os.open(d + "/j.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, body.encode())
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EDQUOT
    assert "max_request_usd 0.001121, this request may cost up to" in refusal(d, "j")
    assert fake.requests_for(text) == 0 and fake.requests_for(text + "\n") == 0
    short = json.dumps({"messages": [{"role": "user", "content": "short " + "y" * 14}]})
    with open(d + "/short.prompt", "w") as f:
        f.write(short)  # longer than 40 bytes as a file, its message fits
    assert read_all(d + "/short.response")[1] == 0
    setpolicy(d, "max_request_usd", "1")
    with open(d + "/cheap.prompt", "w") as f:
        f.write("cheap enough")
    assert read_all(d + "/cheap.response") == (b"echo: cheap enough", 0)


def test_policy_defaults_and_caps_reach_the_request(mnt, fake):
    d = mnt.model()
    setpolicy(d, "max_output_tokens", "7")
    setpolicy(d, "temperature", "0.3")
    setpolicy(d, "system", "Be brief.")
    text = "defaults %s" % id(mnt)
    with open(d + "/t.prompt", "w") as f:
        f.write(text)
    assert read_all(d + "/t.response")[1] == 0
    body = last_request(fake, text)
    assert body["max_tokens"] == 7
    assert body["temperature"] == 0.3
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    # a JSON prompt's own temperature and system win; its max_tokens may
    # not rise above the cap
    own = "own values %s" % id(mnt)
    with open(d + "/j.prompt", "w") as f:
        json.dump({"messages": [{"role": "system", "content": "Be long."},
                                {"role": "user", "content": own}],
                   "temperature": 0.9, "max_tokens": 500}, f)
    assert read_all(d + "/j.response")[1] == 0
    body = last_request(fake, own)
    assert body["max_tokens"] == 7
    assert body["temperature"] == 0.9
    assert [m["content"] for m in body["messages"] if m["role"] == "system"] == ["Be long."]


def test_retries_come_from_the_policy(mnt, fake):
    d = mnt.model()
    setpolicy(d, "retries", "0")
    text = "no retry %s [[fault:status code=503]]" % id(mnt)
    with open(d + "/r.prompt", "w") as f:
        f.write(text)
    assert read_all(d + "/r.response")[1] == errno.EIO
    meta = wait_finished(d, "r")
    assert meta["status"] == "failed" and len(meta["attempts"]) == 1
    assert fake.requests_for(text) == 1


def test_a_resumed_job_meets_the_policy_in_force_at_the_next_mount(mount_factory, fake):
    m = mount_factory()
    d = m.model()
    text = "wait for me [[fault:gate name=pol-resume]]"
    with open(d + "/w.prompt", "w") as f:
        f.write(text)
    m.kill9()
    # an administrator narrows the policy while the daemon is stopped
    with open(os.path.join(m.state, "tree", "openai", ".policy"), "w") as f:
        f.write('{\n  "providers": ["local"]\n}\n')
    m.start()
    meta = wait_finished(d, "w")
    assert meta["status"] == "failed"
    assert refusal(d, "w") == ("The job could not be resumed: it was refused by "
                               "%s/openai/.policy: providers does not include openai, the "
                               "cloud of openai/us/gpt-4o.\n" % m.path)
    assert read_all(d + "/w.response")[1] == errno.EIO
    fake.open_gate("pol-resume")


def test_first_token_timeout_and_timeout_come_from_the_policy(mnt, fake):
    d = mnt.model()
    setpolicy(d, "retries", "0")
    setpolicy(d, "first_token_timeout_s", "0.5")
    text = "silent too long %s [[fault:latency seconds=5]]" % id(mnt)
    with open(d + "/s.prompt", "w") as f:
        f.write(text)
    assert read_all(d + "/s.response")[1] == errno.EIO
    meta = wait_finished(d, "s")
    assert [a["outcome"] for a in meta["attempts"]] == ["first_token_timeout"]
    assert meta["attempts"][0]["ms"] < 3000


def test_umask_applies_to_what_is_made_below(mnt):
    d = mnt.model()
    setpolicy(d, "umask", "077")
    os.mkdir(d + "/ws", 0o755)
    assert os.stat(d + "/ws").st_mode & 0o7777 == 0o700
    sh("umask 022; echo hi > %s/ws/q.prompt; touch %s/ws/notes.txt" % (d, d))
    assert os.stat(d + "/ws/q.prompt").st_mode & 0o777 == 0o600
    assert os.stat(d + "/ws/notes.txt").st_mode & 0o777 == 0o600
    assert read_all(d + "/ws/q.response") == (b"echo: hi\n", 0)
    assert os.stat(d + "/ws/q.response").st_mode & 0o777 == 0o400  # read-only, as generated files are
    # chmod afterwards is the owner's to do
    os.chmod(d + "/ws/notes.txt", 0o644)
    assert os.stat(d + "/ws/notes.txt").st_mode & 0o777 == 0o644


def test_prompt_format_decides_how_prompts_are_read(mnt, fake):
    d = mnt.model()
    request = json.dumps({"messages": [{"role": "user", "content": "as a request"}]})
    with open(d + "/auto.prompt", "w") as f:
        f.write(request)
    assert read_all(d + "/auto.response") == (b"echo: as a request", 0)
    assert read_meta(d + "/auto.meta")["format"] == "json"
    os.mkdir(d + "/words")
    setpolicy(d + "/words", "prompt_format", "text")
    with open(d + "/words/t.prompt", "w") as f:
        f.write(request)
    assert read_all(d + "/words/t.response") == (("echo: " + request).encode(), 0)
    assert read_meta(d + "/words/t.meta")["format"] == "text"
    os.mkdir(d + "/strict")
    setpolicy(d + "/strict", "prompt_format", "json")
    fd = os.open(d + "/strict/s.prompt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"plain words")
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert "prompt_format is json" in refusal(d + "/strict", "s")
    assert fake.requests_for("plain words") == 0
