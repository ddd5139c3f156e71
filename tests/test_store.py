"""Results store: atomic rows that survive kill -9, fingerprints, concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from sddhr.config import SpecError
from sddhr.store import STORE_NAME, ResultsStore, fingerprint, fingerprint_diff, iter_missing, model_identity

EVAL = {"levels": [1.0, 2.0], "instances": 3, "first_seed": 1000, "impl": "bit_true"}
FP = fingerprint(EVAL, [{"name": "conv", "data": "digits"}, {"name": "sddhr", "data": "digits"}])


def acc(model: str, level: float, seed: int) -> float:
    """An accuracy that an independent reader can recompute from the key."""
    return round((seed % 97) / 97 + level / 1000 + len(model) / 10000, 9)


def test_rows_baselines_and_results_dicts(tmp_path):
    with ResultsStore.open(tmp_path, FP) as st:
        assert st.done() == set() and st.models() == ["conv", "sddhr"]
        for m in ("sddhr", "conv"):
            st.put_baseline(m, "float", 0.97, seconds=0.5)
            st.put_baseline(m, "ideal", 0.96)
            for lv in (2.0, 1.0):
                for s in (1001, 1000):
                    st.put({"model": m, "level": lv, "seed": s, "accuracy": acc(m, lv, s), "seconds": 1.0})
        st.put_baseline("sddhr", "own_instance", 0.9, level=2.0, seed=0)
        st.put_model_info("conv", {"train_config": {"recipe": "conventional"}})
        assert st.done("conv") == {("conv", lv, s) for lv in (1.0, 2.0) for s in (1000, 1001)}
        assert st.rows("conv")[0] == {"model": "conv", "level": 1.0, "seed": 1000, "accuracy": acc("conv", 1, 1000),
                                      "seconds": 1.0}
        res = st.to_results()
    assert [r["name"] for r in res] == ["conv", "sddhr"]  # fingerprint order, not insertion order
    conv, sd = res
    assert conv["float"] == 0.97 and conv["ideal"] == 0.96 and conv["own_instance"] is None
    assert conv["train_config"] == {"recipe": "conventional"} and sd["train_config"] is None
    assert sd["own_instance"] == {"level": 2.0, "seed": 0, "accuracy": 0.9}
    assert [(r["level"], r["seed"]) for r in conv["rows"]] == [(1.0, 1000), (1.0, 1001), (2.0, 1000), (2.0, 1001)]
    assert set(conv["rows"][0]) == {"model", "level", "seed", "accuracy"}
    assert conv["seconds"] == pytest.approx(4.5)
    with ResultsStore.open(tmp_path, FP) as st:
        assert [len(r["rows"]) for r in st.to_results(levels=[2.0], seeds=[1001])] == [1, 1]


def test_results_feed_save_results(tmp_path):
    evaluate = pytest.importorskip("sddhr.evaluate")
    with ResultsStore.open(tmp_path, FP) as st:
        for m in ("conv", "sddhr"):
            st.put_baseline(m, "float", 0.9)
            st.put_baseline(m, "ideal", 0.8)
            for lv in (1.0, 2.0):
                for s in (1000, 1001, 1002):
                    st.put({"model": m, "level": lv, "seed": s, "accuracy": acc(m, lv, s)})
        path = evaluate.save_results(st.to_results(), evaluate.make_eval_config(EVAL), tmp_path)
    doc = json.loads(path.read_text())
    assert len(doc["summary"]) == 4 and doc["summary"][0]["n"] == 3
    assert (tmp_path / "instances.csv").read_text().count("\n") == 1 + 12


def test_incomplete_store_and_bad_rows(tmp_path):
    with ResultsStore.open(tmp_path, FP) as st:
        st.put({"model": "conv", "level": 1, "seed": 1000, "accuracy": 0.5})
        with pytest.raises(SpecError, match="'conv' lacks its float and ideal baseline"):
            st.to_results(models=["conv"])
        with pytest.raises(SpecError, match="needs model, level, seed and accuracy"):
            st.put({"model": "conv", "level": 1})
        with pytest.raises(SpecError, match="accuracy must be finite"):
            st.put({"model": "conv", "level": 1, "seed": 1, "accuracy": float("nan")})
        with pytest.raises(SpecError, match="seed must be an integer"):
            st.put({"model": "conv", "level": 1, "seed": 1.5, "accuracy": 0.5})
        with pytest.raises(SpecError, match="baseline kind"):
            st.put_baseline("conv", "best", 1.0)


def test_other_configuration_is_refused_naming_the_key(tmp_path):
    ResultsStore.open(tmp_path, FP).close()
    other = fingerprint({**EVAL, "instances": 5}, FP["models"])
    with pytest.raises(SpecError, match=r"different configuration: eval_config\.instances: stored 3, now 5"):
        ResultsStore.open(tmp_path, other)
    renamed = fingerprint(EVAL, [{"name": "conv", "data": "mnist"}, FP["models"][1]])
    with pytest.raises(SpecError, match=r"models\[0\]\.data: stored \"digits\", now \"mnist\""):
        ResultsStore.open(tmp_path, renamed)
    assert fingerprint_diff({"a": 1}, {"a": 1, "b": 2}) == ['b: stored "(absent)", now 2']


def test_model_identity_resolves_the_path_and_hashes_the_content(tmp_path, monkeypatch):
    ck = tmp_path / "run" / "checkpoint.pt"
    ck.parent.mkdir()
    ck.write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    a, b = model_identity("m", "run/checkpoint.pt", "digits"), model_identity("m", ck, "digits")
    assert a == b and a["checkpoint"] == str(ck.resolve())
    import hashlib

    assert a["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    ck.write_bytes(b"retrained")
    assert model_identity("m", ck, "digits") != a
    with pytest.raises(SpecError, match="nope.pt: cannot read"):
        model_identity("m", tmp_path / "nope.pt")


def test_not_a_store_and_unwritable_folder(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpecError, match=r"results\.sqlite: not a usable sddhr results store"):
        ResultsStore.open(tmp_path, FP)
    (tmp_path / "f").write_text("x")
    with pytest.raises(SpecError, match="is a file, not a folder"):
        ResultsStore.open(tmp_path / "f" / "out", FP)


WRITER = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_store import acc
from sddhr.store import ResultsStore
fp = json.loads(sys.argv[2])
model, seeds = sys.argv[3], range(int(sys.argv[4]), int(sys.argv[5]))
st = ResultsStore.open(sys.argv[1], fp)
for s in seeds:
    if (model, 1.0, s) in st.done(model):
        continue
    st.put({{"model": model, "level": 1.0, "seed": s, "accuracy": acc(model, 1.0, s)}})
    print(s, flush=True)
    time.sleep(float(sys.argv[6]))
print("end", flush=True)
"""


def _writer(out, model, lo, hi, pause=0.0):
    code = WRITER.format(tests=os.path.dirname(__file__))
    return subprocess.Popen([sys.executable, "-c", code, str(out), json.dumps(FP), model, str(lo), str(hi),
                             str(pause)], stdout=subprocess.PIPE, text=True)


def test_kill_9_mid_loop_keeps_rows_and_the_rest_can_be_added(tmp_path):
    p = _writer(tmp_path, "conv", 0, 10_000, pause=0.002)
    try:
        for _ in range(25):
            p.stdout.readline()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    with ResultsStore.open(tmp_path, FP) as st:
        rows = st.rows("conv")
        n = len(rows)
        assert 25 <= n < 10_000
        assert [r["seed"] for r in rows] == list(range(n))  # a prefix, nothing torn
        assert all(r["accuracy"] == acc("conv", 1.0, r["seed"]) for r in rows)
    q = _writer(tmp_path, "conv", 0, n + 30)  # the rerun computes only what is missing
    out = q.communicate(timeout=120)[0].split()
    assert out[-1] == "end" and [int(s) for s in out[:-1]] == list(range(n, n + 30))
    with ResultsStore.open(tmp_path, FP) as st:
        assert st.done("conv") == {("conv", 1.0, s) for s in range(n + 30)}
        assert list(iter_missing([("conv", 1, s) for s in range(n + 32)], st.done())) == \
            [("conv", 1, n + 30), ("conv", 1, n + 31)]


def test_two_processes_write_at_once(tmp_path):
    ps = [_writer(tmp_path, m, 0, 150) for m in ("conv", "sddhr")]
    for p in ps:
        assert p.communicate(timeout=120)[0].split()[-1] == "end" and p.returncode == 0
    with ResultsStore.open(tmp_path, FP) as st:
        for m in ("conv", "sddhr"):
            rows = st.rows(m)
            assert [r["seed"] for r in rows] == list(range(150))
            assert all(r["accuracy"] == acc(m, 1.0, r["seed"]) for r in rows)


def test_values_read_back_are_range_checked(tmp_path):
    with ResultsStore.open(tmp_path, {"eval_config": {}, "models": [{"name": "m"}]}) as st:
        st.put({"model": "m", "level": 2.0, "seed": 1, "accuracy": 0.75})
        st.put({"model": "m", "level": 2.0, "seed": 2, "accuracy": 0.25})
        st.put_baseline("m", "float", 0.9)
        st.put_baseline("m", "ideal", 0.8)
        with pytest.raises(SpecError, match=r"accuracy must be in \[0.0, 1.0\], got 7.5"):
            st.put({"model": "m", "level": 2.0, "seed": 3, "accuracy": 7.5})
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:  # edited by hand: 75 % typed as 7.5
        conn.execute("UPDATE results SET accuracy = 7.5 WHERE seed = 1")
    with ResultsStore.open(tmp_path, {"eval_config": {}, "models": [{"name": "m"}]}) as st:
        with pytest.raises(SpecError, match=r"the result of 'm' at level 2.0, seed 1: accuracy must be in "
                                            r"\[0.0, 1.0\], got 7.5; the store was edited or damaged"):
            st.to_results()
    with sqlite3.connect(tmp_path / STORE_NAME) as conn:
        conn.execute("UPDATE results SET accuracy = 0.75 WHERE seed = 1")
        conn.execute("UPDATE baselines SET accuracy = -0.1 WHERE kind = 'ideal'")
    with ResultsStore.open(tmp_path, {"eval_config": {}, "models": [{"name": "m"}]}) as st:
        assert [r["accuracy"] for r in st.rows()] == [0.75, 0.25]
        with pytest.raises(SpecError, match="the ideal baseline of 'm': accuracy must be in"):
            st.to_results()


def test_a_foreign_sqlite_file_is_refused_and_left_as_it_was(tmp_path):
    db = tmp_path / STORE_NAME
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
        conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.close()
    before = db.read_bytes()
    with pytest.raises(SpecError, match=r"not an sddhr results store \(it holds the tables customers\)"):
        ResultsStore.open(tmp_path, {"eval_config": {}, "models": []})
    assert db.read_bytes() == before
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["customers"]
    conn.close()
