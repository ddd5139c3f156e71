"""One writer per run folder: real processes, stale locks, fallbacks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from sddhr.config import SpecError
from sddhr.runlock import HOLDER_NAME, LOCK_NAME, lock_holder, run_lock

HOLD = ("import sys, time\nfrom sddhr.runlock import run_lock\n"
        "with run_lock(sys.argv[1], what='train', command='sddhr train --out X'):\n"
        "    print('locked', flush=True); time.sleep(float(sys.argv[2]))\n")


def _holder(folder, seconds=60.0):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _stop(p):
    if p.poll() is None:
        p.kill()
    p.wait()


def test_second_process_is_refused_naming_folder_and_holder(tmp_path):
    p = _holder(tmp_path / "run")
    try:
        with pytest.raises(SpecError) as exc, run_lock(tmp_path / "run", what="evaluate"):
            pass
        msg = str(exc.value)
        assert str(tmp_path / "run") in msg and f"pid {p.pid}" in msg and "sddhr train --out X" in msg
        assert lock_holder(tmp_path / "run")["pid"] == p.pid
    finally:
        _stop(p)


def test_lock_of_a_killed_holder_is_taken_over(tmp_path, capsys):
    p = _holder(tmp_path / "run")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (tmp_path / "run" / HOLDER_NAME).exists()  # kill -9: the record stays, the flock is gone
    assert lock_holder(tmp_path / "run") is None
    with run_lock(tmp_path / "run", what="train"):
        body = json.loads((tmp_path / "run" / HOLDER_NAME).read_text())
        assert body["pid"] == os.getpid() and body["host"] == socket.gethostname() and body["what"] == "train"
    err = capsys.readouterr().err
    assert "taking over a stale run lock" in err and f"pid {p.pid}" in err and "no longer running" in err
    assert not (tmp_path / "run" / HOLDER_NAME).exists()  # released: removed
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_finished_holder_leaves_no_lock(tmp_path, capsys):
    p = _holder(tmp_path / "run", seconds=0)
    p.wait()
    assert p.returncode == 0 and not (tmp_path / "run" / HOLDER_NAME).exists()
    with run_lock(tmp_path / "run"):
        pass
    assert "stale" not in capsys.readouterr().err


def test_two_processes_racing_exactly_one_wins(tmp_path):
    code = ("import sys, time\nfrom sddhr.config import SpecError\nfrom sddhr.runlock import run_lock\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "try:\n    with run_lock(sys.argv[1]):\n        time.sleep(1.5)\n    print('won')\n"
            "except SpecError:\n    print('refused')\n")
    import time

    start = str(time.time() + 1.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "r"), start], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["refused", "won"]


def test_nested_lock_in_one_process_is_shared(tmp_path):
    with run_lock(tmp_path / "r", what="compare"), run_lock(tmp_path / "r", what="evaluate"):
        assert json.loads((tmp_path / "r" / HOLDER_NAME).read_text())["what"] == "compare"
    assert not (tmp_path / "r" / HOLDER_NAME).exists()


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "r").write_text("x")
    with pytest.raises(SpecError, match="is a file, not a folder"), run_lock(tmp_path / "r"):
        pass


def test_a_symlinked_lock_file_is_refused_and_its_target_untouched(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    before = precious.stat()
    out = tmp_path / "o"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(precious)
    with pytest.raises(SpecError, match=r"the run lock is a symbolic link .*precious\.txt.*Remove the link"), \
            run_lock(out):
        pass
    (out / LOCK_NAME).unlink()
    (out / HOLDER_NAME).symlink_to(precious)  # the holder record: replaced, never written through
    with run_lock(out):
        assert json.loads((out / HOLDER_NAME).read_text())["pid"] == os.getpid()
    after = precious.stat()
    assert precious.read_text() == "keep me\n" and (after.st_size, after.st_mtime_ns) == (before.st_size,
                                                                                           before.st_mtime_ns)


def test_a_live_process_that_no_longer_holds_the_lock_is_not_called_gone(tmp_path, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "r").mkdir()
        body = {"pid": live.pid, "host": socket.gethostname(), "command": "sddhr compare"}
        (tmp_path / "r" / HOLDER_NAME).write_text(json.dumps(body))  # left behind; the lock itself is free
        with run_lock(tmp_path / "r"):
            pass
    finally:
        _stop(live)
    err = capsys.readouterr().err
    assert f"pid {live.pid}" in err and "still running but no longer holds the lock" in err
    assert "no longer running" not in err
