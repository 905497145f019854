"""Remote (``gs://``) outputs and inputs of the commands, against an in-memory GCS (``fake_gcs``):
a distillation writes every output there, resumes from its checkpoint there, and nothing lands on
local disk under a path made from the URL."""

import io
import json
import os
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fake_gcs import fake_gcs  # noqa: E402

ARCH = "mlp-w16"  # fast to compile


def _local_files(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _temp_leftovers() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(("jaxdd-out-", "jaxdd-events-"))}


def test_distill_writes_and_resumes_at_a_url(tiny_npz, tmp_path, monkeypatch, capsys):
    from etils import epath

    from jaxdd.cli import main
    from jaxdd.data import load_dataset
    from jaxdd.data.distilled import DistilledSet
    from jaxdd.prune import load_subset
    from jaxdd.utils.checkpoint import Checkpointer

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a URL mistaken for a relative path would appear here ("gs:/bucket/...")
    before = _temp_leftovers()
    common = ["distill", "--method", "dm", "--dataset", tiny_npz, "--model", ARCH, "--ipc", "1", "--batch-real", "4",
              "--checkpoint-every", "2", "--eval-every", "0", "--no-eval", "--no-progress"]
    url = "gs://bucket/runs/dm"
    with fake_gcs() as store:
        assert main(common + ["--iterations", "2", "--out", url]) == 0
        names = {k[len("/bucket/runs/dm/"):] for k in store}
        for name in ("results.json", "history.json", "grid.png", "loss.png", "difficulty.png",
                     "distilled/distilled.npz", "distilled/distilled.json", "checkpoints/2/commit_success.txt"):
            assert name in names, name
        assert any(n.startswith("events.out.tfevents.") for n in names)  # TensorBoard events uploaded
        assert main(common + ["--iterations", "2", "--out", url]) == 1  # holds a run, no --resume
        assert "--resume" in capsys.readouterr().err
        assert main(common + ["--iterations", "4", "--out", url, "--resume"]) == 0  # extend from the checkpoint
        results = json.loads(bytes(store["/bucket/runs/dm/results.json"].getbuffer()))
        assert results["resumed_from"] == 2
        with Checkpointer(url + "/checkpoints") as ck:
            assert ck.latest_step() == 4
        remote = DistilledSet.load(url + "/distilled")  # read back through etils.epath
        # jaxdd eval reads the set from the URL and writes its record there
        assert main(["eval", "--distilled", url + "/distilled", "--dataset", tiny_npz, "--model", ARCH,
                     "--num-models", "1", "--epochs", "1", "--out", "gs://bucket/eval.json"]) == 0
        record = json.loads(bytes(store["/bucket/eval.json"].getbuffer()))
        assert record["config"]["out"] == "gs://bucket/eval.json" and record["results"][0]["num_models"] == 1
        # jaxdd prune reads its scores from a URL and writes the subset there; the subset reads back
        scores = np.random.default_rng(0).uniform(size=24)
        buf = io.BytesIO()
        np.savez(buf, scores=scores)
        store_path = "gs://bucket/scores.npz"
        epath.Path(store_path).write_bytes(buf.getvalue())
        assert main(["prune", "--scores", store_path, "--dataset", tiny_npz, "--keep", "0.5",
                     "--out", "gs://bucket/sub.npz"]) == 0
        subset = load_subset(load_dataset(tiny_npz), "gs://bucket/sub.npz")
        keep = np.sort(np.concatenate([np.argsort(scores[c * 8:(c + 1) * 8])[:4] + c * 8 for c in range(3)]))
        np.testing.assert_array_equal(np.sort(subset.original_indices), keep)  # the 4 easiest of each class
    assert _local_files(cwd) == []  # nothing written under the current folder
    assert not os.path.exists("/gs/bucket")  # etils' internal form of gs:// paths, never a local folder
    assert _temp_leftovers() == before  # staging files removed

    # the same 4 iterations in one local run: the resumed remote run is bit-identical
    assert main(common + ["--iterations", "4", "--out", str(tmp_path / "local")]) == 0
    local = DistilledSet.load(tmp_path / "local" / "distilled")
    np.testing.assert_array_equal(remote.images, local.images)
    np.testing.assert_array_equal(remote.labels, local.labels)


def test_local_only_paths_fail_before_work(tiny_npz, tmp_path, monkeypatch, capsys):
    """Commands whose file formats need local paths say so (naming the flag) before any work starts."""
    from jaxdd.cli import main

    monkeypatch.chdir(tmp_path)
    cases = [
        (["experts", "--dataset", tiny_npz, "--num-experts", "1", "--out", "gs://b/experts"], "--out gs://b/experts"),
        (["sample", "--pool", "gs://b/pool", "--dataset", tiny_npz, "--ipc", "1", "--out", str(tmp_path / "s")],
         "--pool gs://b/pool"),
        (["distill", "--method", "ld3m", "--prior", "gs://b/prior", "--dataset", tiny_npz, "--out",
          str(tmp_path / "d")], "--prior gs://b/prior"),
    ]
    for argv, named in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert named in err and "needs a local path" in err, err
    assert main(["distill", "--dataset", "gs://b/data.npz", "--out", str(tmp_path / "d2")]) == 1
    assert "dataset gs://b/data.npz: dataset files are read from local paths" in capsys.readouterr().err
    assert _local_files(tmp_path) == []


def test_unsupported_scheme_is_a_clear_error():
    from jaxdd.utils.io import as_path, check_output

    with pytest.raises(ValueError, match="scheme memory:// is not supported"):
        as_path("memory://bucket/x")
    with pytest.raises(ValueError, match="scheme memory:// is not supported"):
        check_output("memory://bucket/x", folder=True)
    assert str(as_path("gs://bucket/a/b")) == "gs://bucket/a/b"  # URLs stay URLs
    assert str(as_path("~/x")) == os.path.expanduser("~/x")


def test_metric_log_uploads_events_to_a_url(monkeypatch, tmp_path):
    """TensorBoard events of a remote logdir: staged locally, uploaded on flush and (throttled)
    while logging; the uploaded file holds the scalars (read with test_metric_log's record reader)."""
    from test_metric_log import read_records

    from jaxdd.utils import metric_log
    from jaxdd.utils.metric_log import MetricLog

    with fake_gcs() as store:
        log = MetricLog("gs://bucket/tb")
        log.scalars(1, {"loss": 0.5})
        assert not store  # throttled: nothing uploaded yet
        monkeypatch.setattr(metric_log, "UPLOAD_SECONDS", 0.0)
        log.scalars(2, {"loss": 0.25})
        (name,) = [k for k in store if k.startswith("/bucket/tb/events.out.tfevents.")]
        log.close()
        data = bytes(store[name].getbuffer())
    assert not os.path.exists(log._staging)  # the staging folder is removed on close
    (tmp_path / "events").write_bytes(data)
    scalars = [(e.step, v.simple_value) for e in read_records(tmp_path / "events") for v in e.summary.value
               if v.tag == "loss"]
    assert scalars == [(1, 0.5), (2, 0.25)]
