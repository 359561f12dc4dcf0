"""Backend failures as a reader sees them: retries that recover, failures
that end in EIO with the reason in .error, never a clean end of file after
a broken answer (SPEC §5.3, §7)."""
import errno
import os
import time

import pytest

from conftest import read_all, read_meta, sh, wait_finished


def submit(d, name, text):
    with open(os.path.join(d, name + ".prompt"), "w") as f:
        f.write(text)


def test_503_with_retry_after_is_retried(mnt):
    d = mnt.model()
    text = "retry me [[fault:status code=503 times=1 retry_after=1]]"
    submit(d, "r", text)
    t0 = time.time()
    data, err = read_all(d + "/r.response")
    assert err == 0
    assert data == ("echo: " + text).encode()
    assert time.time() - t0 >= 0.9
    meta = read_meta(d + "/r.meta")
    assert [a["outcome"] for a in meta["attempts"]] == ["http_503", "ok"]


def test_429_then_success(mnt):
    d = mnt.model()
    text = "rate [[fault:status code=429 times=2 retry_after_ms=200]]"
    submit(d, "r429", text)
    data, err = read_all(d + "/r429.response")
    assert (data, err) == (("echo: " + text).encode(), 0)
    assert [a["outcome"] for a in read_meta(d + "/r429.meta")["attempts"]] == \
        ["http_429", "http_429", "ok"]


def test_retries_exhausted_is_eio_with_reason(mnt):
    d = mnt.model()
    submit(d, "x", "down [[fault:status code=500 retry_after=0 message=the_engine_is_on_fire]]")
    data, err = read_all(d + "/x.response")
    assert (data, err) == (b"", errno.EIO)
    meta = read_meta(d + "/x.meta")
    assert meta["status"] == "failed"
    assert [a["outcome"] for a in meta["attempts"]] == ["http_500"] * 3
    lines = open(d + "/x.error").read().splitlines()
    assert "HTTP 500" in lines[0] and "the_engine_is_on_fire" in lines[0]
    assert lines[1].startswith("attempt 1: openai/us/gpt-4o: http_500")
    assert len(lines) == 4


def test_400_is_not_retried(mnt):
    d = mnt.model()
    submit(d, "b", "bad [[fault:status code=400 message=temperature_out_of_range]]")
    data, err = read_all(d + "/b.response")
    assert err == errno.EIO
    meta = read_meta(d + "/b.meta")
    assert [a["outcome"] for a in meta["attempts"]] == ["http_400"]
    assert "temperature_out_of_range" in open(d + "/b.error").readline()
    r = sh("cat %s/b.response" % d, check=False)
    assert r.returncode != 0 and b"Input/output error" in r.stderr


def test_connection_reset_is_retried(mnt):
    d = mnt.model()
    text = "reset [[fault:reset times=1]]"
    submit(d, "c", text)
    assert read_all(d + "/c.response") == (("echo: " + text).encode(), 0)
    assert read_meta(d + "/c.meta")["attempts"][0]["outcome"] in ("connection", "stream_cut")


def test_cut_stream_after_bytes_gives_readers_eio_and_final_answer_complete(mnt):
    d = mnt.model()
    # the first attempt sends 12 bytes, pauses (so the reader surely gets
    # them), sends a little more and is cut; the retry succeeds
    text = ("a long answer that will be cut once "
            "[[fault:cut after=20 times=1]] [[fault:stall after=12 seconds=1 times=1]]")
    submit(d, "cut", text)
    fd = os.open(d + "/cut.response", os.O_RDONLY)
    try:
        first = os.read(fd, 4096)
        assert first == ("echo: " + text).encode()[:len(first)]
        with pytest.raises(OSError) as e:
            while os.read(fd, 4096):
                pass
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    # a fresh reader gets the complete answer of the attempt that succeeded
    assert read_all(d + "/cut.response") == (("echo: " + text).encode(), 0)
    assert [a["outcome"] for a in read_meta(d + "/cut.meta")["attempts"]] == ["stream_cut", "ok"]


def test_cut_every_time_ends_in_eio_never_eof(mnt):
    d = mnt.model()
    submit(d, "cut2", "always cut [[fault:cut after=5]]")
    data, err = read_all(d + "/cut2.response")
    assert err == errno.EIO
    assert wait_finished(d, "cut2")["status"] == "failed"
    # after the failure, every read is EIO, also for new readers
    assert read_all(d + "/cut2.response")[1] == errno.EIO


def test_missing_done_marker_after_a_whole_answer_is_its_end(mnt):
    """Everything but [DONE], after the finish_reason and usage chunks,
    then a clean end of the transfer: the answer is whole, at once, in
    one attempt (a stream cut before those chunks is test_cut_*'s)."""
    d = mnt.model()
    text = "no end [[fault:no_done]]"
    submit(d, "nd", text)
    assert read_all(d + "/nd.response") == (("echo: " + text).encode(), 0)
    meta = wait_finished(d, "nd")
    assert meta["status"] == "done" and meta["finish_reason"] == "stop"
    assert [a["outcome"] for a in meta["attempts"]] == ["ok"]
    assert not os.path.exists(d + "/nd.error")


def test_malformed_chunk_fails(mnt):
    d = mnt.model()
    submit(d, "mf", "garbled [[fault:malformed]]")
    assert read_all(d + "/mf.response")[1] == errno.EIO
    assert [a["outcome"] for a in wait_finished(d, "mf")["attempts"]] == ["malformed"] * 3


def test_html_garbage_fails_with_reason(mnt):
    d = mnt.model()
    submit(d, "h", "html [[fault:garbage]]")
    assert read_all(d + "/h.response")[1] == errno.EIO
    assert "text/html" in open(d + "/h.error").readline()


def test_inband_error_fails_with_provider_message(mnt):
    d = mnt.model()
    submit(d, "ib", "inband [[fault:inband_error]]")
    assert read_all(d + "/ib.response")[1] == errno.EIO
    assert wait_finished(d, "ib")["status"] == "failed"


def test_silence_times_out(mount_factory):
    m = mount_factory(options=("timeout=1",))
    d = m.model()
    text = "quiet [[fault:silence times=1]]"
    submit(d, "s", text)
    t0 = time.time()
    assert read_all(d + "/s.response") == (("echo: " + text).encode(), 0)
    assert time.time() - t0 >= 1
    assert read_meta(d + "/s.meta")["attempts"][0]["outcome"] == "timeout"


def test_endless_answer_is_capped(mount_factory):
    m = mount_factory(options=("max_response_bytes=200000",))
    d = m.model()
    submit(d, "e", "forever [[fault:endless]]")
    data, err = read_all(d + "/e.response")
    assert err == errno.EIO
    assert wait_finished(d, "e")["attempts"][0]["outcome"] == "too_large"
    assert "200000" in open(d + "/e.error").readline()


def test_unreachable_backend_fails_after_retries(mount_factory, fake):
    cfg = {"clouds": {"dead": {"provider": "openai", "regions": {"r": {
        "geo": "local", "endpoint": "http://127.0.0.1:9/v1", "models": {"m": {}}}}}}}
    m = mount_factory(config=cfg)
    d = m.model("dead", "r", "m")
    submit(d, "u", "anyone there?")
    assert read_all(d + "/u.response")[1] == errno.EIO
    meta = read_meta(d + "/u.meta")
    assert [a["outcome"] for a in meta["attempts"]] == ["connection"] * 3
    assert open(d + "/u.error").readline().startswith("Could not reach the provider")
