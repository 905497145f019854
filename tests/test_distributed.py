"""Multi-process start-up flags and primary-only outputs, in one process (tests/test_multiprocess.py
runs real multi-process jobs)."""

import numpy as np
import pytest

from jaxdd.cli import _split_distributed
from jaxdd.utils import distributed
from jaxdd.utils.io import save_npz, write_json
from jaxdd.utils.metric_log import MetricLog


def test_flags_anywhere_on_the_command_line_and_never_abbreviated():
    dist, rest = _split_distributed(["--coordinator", "h:1", "score", "--n", "3", "--num-processes", "2",
                                     "--process-id", "1"])
    assert (dist.coordinator, dist.num_processes, dist.process_id) == ("h:1", 2, 1)
    assert rest == ["score", "--n", "3"]  # a command's own --n is not taken for --num-processes


@pytest.mark.parametrize("args, message", [
    (("h:1", 2, None), "go together"),
    (("h:1", 2, 2), r"--process-id must lie in \[0, 2\)"),
    (("h:1", 0, 0), "--num-processes must be a positive integer"),
    (("nohostport", 2, 0), "must be HOST:PORT"),
])
def test_bad_multi_process_settings_are_refused_before_joining(args, message):
    with pytest.raises(distributed.DistributedError, match=message):
        distributed.initialize(*args)


def test_a_plain_machine_stays_one_process(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.initialize() == 1 and distributed.is_primary()
    assert distributed.initialize("h:1", 1, 0) == 1  # one process given explicitly: nothing to join


def test_outputs_are_written_by_the_primary_only(tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "is_primary", lambda: False)
    write_json(tmp_path / "r.json", {"a": 1})
    save_npz(tmp_path / "s.npz", x=np.zeros(2))
    with MetricLog(tmp_path / "tb") as log:
        log.scalars(1, {"loss": 0.5})
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "s.npz").exists()
    assert not list(tmp_path.rglob("events.out.tfevents.*"))
    monkeypatch.setattr(distributed, "is_primary", lambda: True)
    write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text().strip().startswith("{")
