"""Damaged stores are errors naming what is missing, and a live
store reads as the common complete prefix of its groups. Every store is damaged on disk."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import zarr

from dimlapse.analyze import StoreIntegrityError, open_run


def _attrs(store):
    return json.loads((store / "zarr.json").read_text())["attributes"]


def _set_attrs(store, **changes):
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"].update(changes)
    (store / "zarr.json").write_text(json.dumps(meta))


def test_the_root_attrs_list_what_the_store_holds(tiny_run_copy):
    contents = _attrs(tiny_run_copy)["contents"]
    assert set(contents["groups"]) == {"scalars", "weights", "state", "activations", "probe"}
    assert contents["rows"]["weights"] == contents["rows"]["activations"] == 41
    assert "0.weight" in contents["arrays"]["weights"]


# -- 5. damaged stores -------------------------------------------------------------------------
def test_missing_middle_chunk_of_a_step_index_is_an_error(tiny_run_copy):
    os.remove(tiny_run_copy / "weights" / "step" / "c" / "1")  # rows 8-15
    with pytest.raises(StoreIntegrityError, match=r"weights/step.*rows 8-15"):
        open_run(tiny_run_copy)


def test_missing_middle_chunk_is_found_in_a_store_without_contents(tiny_run_copy):
    meta = json.loads((tiny_run_copy / "zarr.json").read_text())
    del meta["attributes"]["contents"]  # a store written before the attr existed
    (tiny_run_copy / "zarr.json").write_text(json.dumps(meta))
    os.remove(tiny_run_copy / "activations" / "step" / "c" / "2")
    with pytest.raises(StoreIntegrityError, match=r"activations/step.*rows 16-23"):
        open_run(tiny_run_copy)


def test_missing_last_chunk_of_a_step_index_is_an_error(tiny_run_copy):
    os.remove(tiny_run_copy / "weights" / "step" / "c" / "5")  # row 40: a shorter run before
    with pytest.raises(StoreIntegrityError, match=r"weights/step holds 40 .* wrote 41"):
        open_run(tiny_run_copy)


def test_deleted_array_metadata_is_an_error_naming_the_array(tiny_run_copy):
    os.remove(tiny_run_copy / "weights" / "2.weight" / "zarr.json")
    with pytest.raises(StoreIntegrityError, match=r"'weights'.*2\.weight"):
        open_run(tiny_run_copy)


@pytest.mark.parametrize("group", ["activations", "probe", "scalars"])
def test_deleted_group_metadata_is_an_error_naming_the_group(tiny_run_copy, group):
    os.remove(tiny_run_copy / group / "zarr.json")
    with pytest.raises(StoreIntegrityError, match=f"group '{group}' is missing"):
        open_run(tiny_run_copy)


def test_analyze_exits_nonzero_on_a_damaged_store(tiny_run_copy, tmp_path):
    os.remove(tiny_run_copy / "activations" / "zarr.json")
    out = subprocess.run(
        [sys.executable, "-m", "dimlapse", "analyze", "--run", str(tiny_run_copy),
         "--out-dir", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "activations" in out.stderr


# -- 6. a live store: the common complete prefix of every group --------------------------------
def _as_live(store, written):
    """What a reader sees mid-flush: weights flushed up to row `written`, activations and
    state one chunk behind (the writer flushes one group after the other)."""
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["status"] = "running"
    meta["attributes"]["contents"] = {"groups": meta["attributes"]["contents"]["groups"]}
    meta["attributes"].pop("consolidated_metadata", None)
    (store / "zarr.json").write_text(json.dumps(meta))
    for group in ("activations", "state"):
        if (store / group / "step").exists():
            arr = zarr.open_array(store / group / "step", mode="r+")
            arr[written - 8 :] = -1


def test_live_store_shows_the_common_prefix_of_its_groups(tiny_run_copy):
    _as_live(tiny_run_copy, written=41)
    run = open_run(tiny_run_copy)
    w, a = run.weights, run.activations
    assert w.sizes["step"] == a.sizes["step"] == 33  # weights ran a chunk ahead before
    np.testing.assert_array_equal(w["step"].values, a["step"].values)
    tree = run.to_datatree()
    assert tree["weights"].sizes["step"] == tree["activations"].sizes["step"] == 33
    assert run.scalars.sizes["step"] == 40  # per-step scalars keep their own index


def test_group_with_no_complete_row_empties_its_family(tiny_run_copy):
    _as_live(tiny_run_copy, written=8)
    arr = zarr.open_array(tiny_run_copy / "activations" / "step", mode="r+")
    arr[:] = -1
    run = open_run(tiny_run_copy)
    assert run.weights.sizes["step"] == run.activations.sizes["step"] == 0
