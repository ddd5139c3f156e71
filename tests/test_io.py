"""Atomic writes: permissions from the umask, orphan clean-up, errors naming the path."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from sddhr import _io
from sddhr._io import atomic_path, atomic_write_text, check_writable, clean_orphans, temp_name
from sddhr.config import SpecError


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    p = atomic_write_text(tmp_path / "r.json", "{}")
    assert p.stat().st_mode & 0o777 == mode
    with atomic_path(tmp_path / "c.pt") as tmp:  # a checkpoint written by path (torch.save)
        tmp.write_bytes(b"x")
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == mode


def test_error_in_block_keeps_old_content_and_leaves_no_temp(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_full_disk_is_a_spec_error_naming_the_path(tmp_path):
    target = atomic_write_text(tmp_path / "results.json", "old")
    with pytest.raises(SpecError, match=r"results\.json: cannot write: no space left"), atomic_path(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "old"
    # torch.save reports a full disk as a RuntimeError from its stream writer
    with pytest.raises(SpecError, match=r"results\.json: cannot write"), atomic_path(target):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_full_disk_in_write_text(tmp_path, monkeypatch):
    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    with pytest.raises(SpecError, match=r"x\.json: cannot write: no space left on the device"):
        atomic_write_text(tmp_path / "x.json", "{}")
    assert not (tmp_path / "x.json").exists()


def test_file_where_a_folder_is_expected(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(SpecError, match=r"out is a file, not a folder"):
        atomic_write_text(tmp_path / "out" / "sub" / "results.json", "{}")
    with pytest.raises(SpecError, match=r"out is a file, not a folder"):
        check_writable(tmp_path / "out" / "sub")
    with pytest.raises(SpecError, match="a folder is where a file is expected"):
        atomic_write_text(tmp_path, "{}")
    with pytest.raises(SpecError, match="a folder is where a file is expected"):
        check_writable(tmp_path, is_file=True)


def test_check_writable_creates_nothing_and_checks_free_space(tmp_path):
    assert check_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert check_writable(tmp_path / "a" / "t.npz", is_file=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SpecError, match="MiB free"):
        check_writable(tmp_path / "a", min_free_bytes=1 << 62)


def test_check_writable_read_only_folder(tmp_path, monkeypatch):
    if os.geteuid() != 0:  # a real read-only folder (root ignores the mode bits)
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(SpecError, match="permission denied"):
                check_writable(ro / "run")
        finally:
            ro.chmod(0o700)
    real_open = os.open

    def ro_open(path, flags, *a):
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(_io.os, "open", ro_open)
    with pytest.raises(SpecError, match=r"run: cannot write: read-only file system"):
        check_writable(tmp_path / "run")
    with pytest.raises(SpecError, match=r"r\.json: cannot write: read-only file system"):
        atomic_write_text(tmp_path / "r.json", "{}")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_orphans_of_dead_writers_are_removed(tmp_path):
    dead = temp_name(tmp_path / "results.json").name.replace(f".{os.getpid()}.", f".{_dead_pid()}.")
    (tmp_path / dead).write_text("orphan")
    live = temp_name(tmp_path / "other.json")
    live.write_text("in progress")
    other_host = tmp_path / f".x.json.{_io.TMP_TAG}.otherhost.1.abcd.tmp"
    other_host.write_text("remote")
    orphan_dir = tmp_path / dead.replace("results.json", "cifar").replace(".tmp", ".part")
    orphan_dir.mkdir()
    (orphan_dir / "f").write_text("x")
    plain = tmp_path / ".keep.tmp"
    plain.write_text("not ours")
    assert sorted(p.name for p in clean_orphans(tmp_path)) == sorted([dead, orphan_dir.name])
    assert live.exists() and other_host.exists() and plain.exists()


def test_orphan_of_kill_9_is_removed_on_next_write(tmp_path):
    code = ("import time, sys\nfrom sddhr._io import atomic_path\n"
            f"with atomic_path({str(tmp_path / 'ckpt.pt')!r}) as t:\n"
            "    t.write_bytes(b'partial'); print('ready', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    assert any(_io.TMP_TAG in q.name for q in tmp_path.iterdir())
    time.sleep(0.05)
    atomic_write_text(tmp_path / "results.json", "{}")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["results.json"]


def test_csv_rows_strip_the_header_skip_blank_lines_and_count_lines(tmp_path):
    """The one CSV reader behind the measurement files: names stripped, blank rows skipped
    with the file's own line numbers kept, extra fields and non-UTF-8 text refused."""
    from sddhr._io import read_csv_rows

    p = tmp_path / "m.csv"
    p.write_text("state , r_ohm\nP,4000\n\n , \nAP,9000\n")
    names, rows = read_csv_rows(p)
    assert names == ["state", "r_ohm"]
    assert [(line, row["state"], row["r_ohm"]) for line, row in rows] == [(2, "P", "4000"), (5, "AP", "9000")]
    p.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(SpecError, match=r"m.csv:3: more fields than the 2 columns"):
        read_csv_rows(p)
    p.write_bytes(b"a,b\n1,\xff\n")
    with pytest.raises(SpecError, match="not UTF-8"):
        read_csv_rows(p)
    p.write_text("")
    assert read_csv_rows(p) == ([], [])
    with pytest.raises(SpecError, match="not found"):
        read_csv_rows(tmp_path / "none.csv")


def test_csv_header_with_a_repeated_column_is_refused(tmp_path):
    from sddhr._io import read_csv_rows

    p = tmp_path / "m.csv"
    p.write_text("k,k,n,code\n1,2,3,4\n")
    with pytest.raises(SpecError, match=r"m\.csv:1: column 'k' appears more than once"):
        read_csv_rows(p)
    p.write_text("k, n ,n,code\n1,2,3,4\n")  # the same name once stripped
    with pytest.raises(SpecError, match="column 'n' appears more than once"):
        read_csv_rows(p)


def test_csv_with_a_byte_order_mark_reads_like_without(tmp_path):
    from sddhr._io import read_csv_rows

    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    text = "k,n,code\n3,1,2\n4,2,2\n"
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # what spreadsheet programs write
    assert read_csv_rows(marked) == read_csv_rows(plain)
    assert read_csv_rows(marked)[0] == ["k", "n", "code"]


_FULL_DISK = """
import resource, signal, sys, torch
from sddhr.checkpoints import atomic_save
from sddhr.config import SpecError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    atomic_save({"model": {"w": torch.zeros(100000)}}, sys.argv[1])
except SpecError as err:
    print("SpecError:", err)
"""


def test_a_checkpoint_write_that_fails_part_way_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    import subprocess
    import sys

    import torch

    from sddhr.checkpoints import atomic_save

    target = tmp_path / "checkpoint.pt"
    atomic_save({"model": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"SpecError: {target}: cannot write"), out.stdout + out.stderr[-2000:]
    assert "nothing was replaced" in out.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


@pytest.mark.parametrize("content", [b"PK\x03\x04" + b"garbage" * 20,  # a damaged zip
                                     b"\x80\x04\x95" + b"\x00" * 40])  # a pickle
def test_a_damaged_or_foreign_table_file_is_one_clear_line(tmp_path, content):
    from sddhr.abstraction import ColumnTable

    p = tmp_path / "table.npz"
    p.write_bytes(content)
    with pytest.raises(SpecError, match=r"table\.npz: cannot read table file \(not an \.npz archive") as exc:
        ColumnTable.load(p)
    assert "unsafe" not in str(exc.value) and "allow_pickle" not in str(exc.value)


def test_a_pickle_given_as_a_data_file_gets_no_advice_to_unpickle_it(tmp_path):
    import pickle

    from sddhr.data import DataError
    from sddhr.data.readers import read_npz

    p = tmp_path / "train.npz"
    p.write_bytes(pickle.dumps({"x": [1, 2, 3]}))
    with pytest.raises(DataError, match=r"train\.npz: not an \.npz archive") as exc:
        read_npz(p)
    assert "unsafe" not in str(exc.value) and "allow_pickle" not in str(exc.value)


@pytest.mark.parametrize("name", ["", "  "])
def test_an_empty_preset_name_is_refused_not_the_default(name):
    from sddhr.config import preset

    with pytest.raises(SpecError, match=r"preset: the name is empty .*valid presets: .*mram-22nm"):
        preset(name)
