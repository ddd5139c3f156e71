"""Table files: compressed on save (lossless), and files written uncompressed still load."""

from __future__ import annotations

import zipfile

import numpy as np

from sddhr.abstraction import ColumnTable, build_table
from tests.helpers import spec_of


def _table(rows=32):
    return build_table(spec_of(rows, 6), 10.0, "exact", progress=False)


def test_saved_table_is_deflated_and_round_trips_bit_exact(tmp_path):
    table = _table()
    path = table.save(tmp_path / "t.npz")
    with zipfile.ZipFile(path) as z:  # the archive itself says how each array is stored
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_DEFLATED}
    back = ColumnTable.load(path)
    assert back.prob.dtype == np.float64 and np.array_equal(back.prob, table.prob)
    assert np.array_equal(back.code_values, table.code_values)
    assert back.spec == table.spec and back.level == table.level and back.method == table.method


def test_compressed_file_is_smaller_than_the_raw_arrays(tmp_path):
    table = _table(64)
    path = table.save(tmp_path / "t.npz")
    raw = table.prob.nbytes + table.code_values.nbytes
    assert path.stat().st_size < raw / 2


def test_uncompressed_table_files_still_load(tmp_path):
    table = _table(16)
    old = tmp_path / "old.npz"  # the layout files had before compression: plain np.savez
    np.savez(old, prob=table.prob, code_values=table.code_values, spec=np.array(table.spec.to_json()),
             level=np.array(table.level), method=np.array(table.method))
    with zipfile.ZipFile(old) as z:
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
    back = ColumnTable.load(old)
    assert np.array_equal(back.prob, table.prob) and back.level == table.level
