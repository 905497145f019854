"""Faults and bad input, tried as a new user would: unwritable or full output locations, Ctrl-C,
resuming with other settings, late-validated settings, damaged files and bad datasets. Each must
end in one clear line that names the problem and the fix, before work starts where possible,
without losing what was already computed."""

import dataclasses
import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jaxdd.cli import main
from jaxdd.data import load_dataset
from jaxdd.data.dataset import DatasetError
from jaxdd.data.distilled import DistilledSet
from jaxdd.distill import RealData, build_method, distill
from jaxdd.models import create_network
from jaxdd.utils import checkpoint
from jaxdd.utils.checkpoint import CheckpointError, Checkpointer, CheckpointSaveError
from jaxdd.utils.io import OutputError, check_output

ARCH = "mlp-w16"  # fast to compile
REPO = Path(__file__).resolve().parents[1]
# a tiny distillation: 2 iterations of DM on the 24-image tiny_npz, no evaluation
TINY = ["--model", ARCH, "--iterations", "2", "--real-batch-size", "4", "--checkpoint-every", "1", "--eval-every", "0",
        "--no-eval", "--no-progress"]


def _error_line(capsys) -> str:
    """The one line the CLI printed on stderr (asserting it is one line, without a traceback)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder nothing can be written under. Tests run as root, where chmod does not block writes;
    there /sys (sysfs refuses new entries, EPERM, even to root) stands in for a read-only disk."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    ro = Path("/sys/jaxdd-test-unwritable")
    try:
        ro.mkdir()
    except OSError:
        yield ro
        return
    ro.rmdir()
    pytest.skip("no unwritable location on this machine (running as root with a writable /sys)")


@pytest.fixture
def distilled_dir(tmp_path, tiny_npz) -> Path:
    """A small distilled set (1 image per class) of tiny_npz."""
    ds = load_dataset(tiny_npz)
    x = ds.x_train[[0, 8, 16]]
    DistilledSet(images=x, labels=np.arange(3), num_classes=3, dataset=tiny_npz, mean=ds.mean,
                 std=ds.std).save(tmp_path / "set")
    return tmp_path / "set"


# ----------------------------------------------------------------------------- output locations

def test_check_output_refuses_unwritable_and_misnamed_locations(tmp_path, unwritable):
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    with pytest.raises(OutputError, match=r"--out .*cannot write to .*choose a writable location"):
        check_output(unwritable / "run", folder=True)
    with pytest.raises(OutputError, match=r"a\.txt is an existing file, but it names an output folder"):
        check_output(a_file, folder=True)
    with pytest.raises(OutputError, match=r"a\.txt is a file, not a folder"):
        check_output(a_file / "deeper" / "e.json")
    with pytest.raises(OutputError, match=r"is an existing folder, but it names an output file"):
        check_output(tmp_path)
    assert isinstance(OutputError("x"), OSError)  # still an OSError for callers that catch those
    assert check_output(tmp_path / "new" / "run", folder=True) == tmp_path / "new" / "run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # nothing created, the probe file is gone


def test_commands_refuse_an_unwritable_out_before_any_work(tmp_path, tiny_npz, distilled_dir, unwritable, capsys,
                                                          monkeypatch):
    import jaxdd.evaluate

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the output cannot be written")

    monkeypatch.setattr(jaxdd.evaluate, "evaluate_distilled", no_training)
    monkeypatch.setattr(jaxdd.evaluate, "random_real_baseline", no_training)
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    cases = [
        (["distill", "--dataset", tiny_npz, *TINY, "--out", str(unwritable / "run")], "cannot write to"),
        (["distill", "--dataset", tiny_npz, *TINY, "--out", str(a_file)], "is an existing file"),
        (["data", "info", "embedded", "--out", str(unwritable / "i.json")], "cannot write to"),
        (["data", "info", "embedded", "--out", str(a_file / "i.json")], "is a file, not a folder"),
        (["eval", "--distilled", str(distilled_dir), "--model", ARCH, "--out", str(unwritable / "e.json")],
         "cannot write to"),
        (["baseline", "--dataset", tiny_npz, "--ipc", "1", "--out", str(unwritable / "b.json")], "cannot write to"),
        (["score", "--dataset", tiny_npz, "--out", str(unwritable / "s.npz")], "cannot write to"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        assert message in _error_line(capsys), argv
    assert not (tmp_path / "run").exists()


def test_eval_prints_the_table_when_writing_the_results_fails(tmp_path, distilled_dir, capsys, monkeypatch):
    """A full disk at the end of `jaxdd eval` costs the file, not the evaluation."""
    out = tmp_path / "e.json"
    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if str(dst) == str(out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", full_disk)
    argv = ["eval", "--distilled", str(distilled_dir), "--model", ARCH, "--num-models", "1", "--epochs", "1",
            "--out", str(out)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "acc (%)" in captured.out and ARCH in captured.out  # the table came out
    assert "Traceback" not in captured.err
    err = captured.err.strip().splitlines()[-1]  # after the training progress bars
    assert err == (f"jaxdd eval: error: cannot write {out}: No space left on device; free some space or choose "
                   "another location")
    assert not out.exists() and not glob.glob(str(tmp_path / ".e.json.*"))  # no half-written temporary file


def _fail_tensorstore_writes(monkeypatch):
    """Every array write of orbax fails as on a full disk (raised inside orbax's worker threads)."""
    import tensorstore

    async def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tensorstore, "open", no_space)


def test_failed_checkpoint_save_keeps_the_previous_step_and_cleans_up(tmp_path, monkeypatch, capfd, caplog):
    state = {"a": np.arange(6, dtype=np.float32)}
    with Checkpointer(tmp_path) as ck:
        ck.save(1, state)
        with monkeypatch.context() as m:
            _fail_tensorstore_writes(m)
            with pytest.raises(CheckpointSaveError) as err:
                ck.save(2, {"a": state["a"] * 2})
        assert str(err.value) == (f"cannot save checkpoint step 2 in {tmp_path}: No space left on device; free some "
                                  "space or choose another location; the previous checkpoint (step 1) is kept")
        assert isinstance(err.value, OSError) and isinstance(err.value, ValueError)
        # orbax's worker threads log their tracebacks; they are not shown (the error is raised once)
        assert "Traceback" not in capfd.readouterr().err
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage()[:200] for r in caplog.records]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # no *.orbax-checkpoint-tmp left behind
        step, restored, _ = ck.restore_latest({"a": np.zeros(6, np.float32)})
        assert step == 1 and np.array_equal(restored["a"], state["a"])
        ck.save(2, {"a": state["a"] * 2})  # with space again, the same step saves
        assert ck.all_steps() == [1, 2]


def test_distill_on_a_full_disk_prints_one_line_and_resumes(tmp_path, tiny_npz, capfd, monkeypatch):
    import jaxdd.utils.checkpoint as checkpoint

    out = tmp_path / "run"
    real_save = checkpoint.Checkpointer.save

    def fill_disk_at_2(self, step, state, metadata=None):
        if step == 2:
            _fail_tensorstore_writes(monkeypatch)
        return real_save(self, step, state, metadata)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", fill_disk_at_2)
    argv = ["distill", "--dataset", tiny_npz, *TINY, "--out", str(out)]
    assert main(argv) == 1
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "cannot save checkpoint step 2" in err and "No space left on device" in err
    assert f"the last checkpoint (iteration 1) is in {out / 'checkpoints'}: rerun the same command with --resume" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["1"]
    monkeypatch.undo()  # space freed

    # the disk fills again when the results are written: the final evaluation is in the error line
    real_replace = os.replace

    def full_disk(src, dst, *a, **k):
        if Path(dst).name == "results.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    with_eval = [a for a in argv if a != "--no-eval"] + ["--eval-epochs", "1", "--eval-models", "1", "--resume"]
    monkeypatch.setattr(os, "replace", full_disk)
    assert main(with_eval) == 1
    err = capfd.readouterr().err.strip().splitlines()[-1]  # after the evaluation's progress bar
    assert err.startswith(f"jaxdd distill: error: cannot write {out / 'results.json'}: No space left on device")
    evaluated = err.split(f"final evaluation: {ARCH} (dc-dsa) ")[1].split(" %")[0]
    assert err.endswith(f"the last checkpoint (iteration 2) is in {out / 'checkpoints'}: rerun the same command "
                        "with --resume to continue from it")
    monkeypatch.undo()
    assert main(with_eval) == 0  # the same final evaluation, now written
    result = json.loads((out / "results.json").read_text())["evaluation"]["results"][0]
    assert evaluated == f"{result['mean']:.2f} ± {result['std']:.2f}"


# ----------------------------------------------------------------------------- Ctrl-C

def _tiny_method(net, **kw):
    return build_method("dm", net, ipc=1, batch_real=4, **kw)


@pytest.fixture(scope="module")
def env(tiny_npz):
    ds = load_dataset(tiny_npz)
    return ds, create_network(ARCH, num_classes=3, input_shape=(8, 8, 1)), RealData.from_dataset(ds)


def test_interrupt_says_where_the_last_checkpoint_is(env, tmp_path, tiny_npz, capsys, monkeypatch):
    ds, net, real = env

    def ctrl_c(it, state, metrics):
        if it == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as err:
        distill(_tiny_method(net, iterations=6), real, ds, out=tmp_path / "a", checkpoint_every=2, callback=ctrl_c,
                final_eval=False, progress=False)
    assert str(err.value) == (f"interrupted at iteration 3 of 6; the last checkpoint (iteration 2) is in "
                              f"{tmp_path / 'a' / 'checkpoints'}: rerun the same command with --resume to continue "
                              "from it")
    with pytest.raises(KeyboardInterrupt, match="no checkpoint was written yet: rerun the same command without "
                                                "--resume"):
        distill(_tiny_method(net, iterations=6), real, ds, out=tmp_path / "b", checkpoint_every=5, callback=ctrl_c,
                final_eval=False, progress=False)

    # the command line: exit status 130 and that one line, no traceback
    import jaxdd.distill.driver as driver

    real_grid = driver._save_grid
    calls = []

    def ctrl_c_at_second_grid(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_grid(*args)

    monkeypatch.setattr(driver, "_save_grid", ctrl_c_at_second_grid)
    assert main(["distill", "--dataset", tiny_npz, *TINY, "--out", str(tmp_path / "c")]) == 130
    line = _error_line(capsys)
    assert line == (f"jaxdd distill: interrupted at iteration 2 of 2; the last checkpoint (iteration 2) is in "
                    f"{tmp_path / 'c' / 'checkpoints'}: rerun the same command with --resume to continue from it")


def test_sigint_to_a_running_distill(tmp_path, tiny_npz):
    """The real thing: SIGINT (Ctrl-C) to `jaxdd distill` in its own process, after its first checkpoint."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "jaxdd", "distill", "--dataset", tiny_npz, *TINY, "--out", str(out)]
    argv[argv.index("--iterations") + 1] = "1000000"
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        # a committed step: a folder named by its number only (not orbax's "<step>.orbax-checkpoint-tmp..."
        # being written, whose name ends in digits in some orbax versions)
        while not [p for p in glob.glob(str(out / "checkpoints" / "*")) if Path(p).name.isdigit()]:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    err = err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("jaxdd distill: interrupted at iteration ")
    assert f"is in {out / 'checkpoints'}: rerun the same command with --resume" in err


# ----------------------------------------------------------------------------- resume with other settings

@dataclasses.dataclass(frozen=True)
class _FixedLength:
    """A method whose schedule depends on the total iterations (``extendable = False``)."""

    inner: Any
    extendable = False

    name = property(lambda self: self.inner.name)
    config = property(lambda self: self.inner.config)
    network = property(lambda self: self.inner.network)
    eval_preset = property(lambda self: self.inner.eval_preset)

    def for_dataset(self, dataset):
        return self

    def init(self, key, real):
        return self.inner.init(key, real)

    def update(self, state, real):
        return self.inner.update(state, real)

    def synthetic(self, state):
        return self.inner.synthetic(state)


def test_resume_names_the_differing_fields_and_extends_iterations(env, tmp_path):
    ds, net, real = env
    common = dict(checkpoint_every=1, final_eval=False, progress=False)
    out = tmp_path / "run"
    distill(_tiny_method(net, iterations=2), real, ds, out=out, **common)

    other_net = create_network("mlp-w8", num_classes=3, input_shape=(8, 8, 1))
    with pytest.raises(ValueError) as err:
        distill(_tiny_method(other_net, iterations=2), real, ds, out=out, resume=True, **common)
    assert str(err.value) == (f"cannot resume {out}: it was made with different run settings (network: 'mlp-w16' in "
                              "the checkpoint, 'mlp-w8' now). Resume with the checkpoint's settings, or choose "
                              "another --out folder")
    with pytest.raises(ValueError) as err:
        distill(_tiny_method(net, iterations=2, lr_img=0.5), real, ds, out=out, resume=True, seed=1, **common)
    message = str(err.value)
    assert "a different method config (lr_img: 1.0 in the checkpoint, 0.5 now)" in message
    assert "different run settings (seed: 0 in the checkpoint, 1 now)" in message
    assert "network" not in message and "batch_real" not in message  # only what differs

    # more iterations continue the finished run, bit-identical to an uninterrupted longer run
    extended = distill(_tiny_method(net, iterations=4), real, ds, out=out, resume=True, **common)
    straight = distill(_tiny_method(net, iterations=4), real, ds, out=tmp_path / "straight", **common)
    assert extended.resumed_from == 2
    np.testing.assert_array_equal(np.asarray(extended.distilled.images), np.asarray(straight.distilled.images))
    assert extended.history == straight.history

    with pytest.raises(ValueError, match=r"different run settings \(iterations: 3 is below the checkpoint's "
                                         r"iteration 4\)"):
        distill(_tiny_method(net, iterations=3), real, ds, out=out, resume=True, **common)
    with pytest.raises(ValueError, match=r"different run settings \(iterations: 4 in the checkpoint, 6 now \(dm "
                                         r"cannot extend a run: its schedule depends on the total\)\)"):
        distill(_FixedLength(_tiny_method(net, iterations=6)), real, ds, out=out, resume=True, **common)


# ----------------------------------------------------------------------------- settings validated up front

def test_settings_are_validated_before_the_first_iteration(tmp_path, tiny_npz, distilled_dir, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["distill", "--dataset", tiny_npz, *[a for a in TINY if a != "--no-eval"], "--out", str(out)]
    assert main(argv + ["--eval-preset", "nosuch"]) == 1
    assert "unknown evaluation preset 'nosuch'" in _error_line(capsys)
    assert main(argv + ["--eval-preset", "mtt"]) == 1  # DM learns no lr for the mtt preset
    assert "trains with the set's learned lr, but dm learns none" in _error_line(capsys)
    assert main(argv + ["--eval-models", "0"]) == 1
    assert "eval_final_models must be an integer >= 1, got 0" in _error_line(capsys)
    assert not out.exists()  # refused before anything was written

    import jaxdd.evaluate

    monkeypatch.setattr(jaxdd.evaluate, "evaluate_distilled", lambda *a, **k: pytest.fail("trained"))
    assert main(["eval", "--distilled", str(distilled_dir), "--model", f"{ARCH},nosuchnet",
                 "--out", str(tmp_path / "e.json")]) == 1
    assert "unknown model 'nosuchnet'" in _error_line(capsys)


# ----------------------------------------------------------------------------- damaged files, bad datasets

def test_damaged_distilled_set_files_name_the_file_and_the_fix(distilled_dir):
    npz, meta = distilled_dir / "distilled.npz", distilled_dir / "distilled.json"
    good_npz, good_meta = npz.read_bytes(), meta.read_text()
    fix = "rewrite it with the command that made the set (a `jaxdd distill` run: the same command with --resume"

    npz.write_bytes(good_npz[: len(good_npz) // 2])
    with pytest.raises(ValueError) as err:
        DistilledSet.load(distilled_dir)
    assert str(err.value).startswith(f"{npz} is damaged (BadZipFile") and fix in str(err.value)
    npz.write_bytes(good_npz)

    meta.write_text(good_meta[: len(good_meta) // 2])
    with pytest.raises(ValueError) as err:
        DistilledSet.load(distilled_dir)
    assert str(err.value).startswith(f"{meta} is not valid JSON (") and fix in str(err.value)
    meta.write_text("[1, 2]")
    with pytest.raises(ValueError, match="is not a distilled-set record"):
        DistilledSet.load(distilled_dir)
    meta.write_text(good_meta)
    assert DistilledSet.load(distilled_dir).ipc == 1


def _npz(path, **changes):
    r = np.random.default_rng(0)
    arrays = dict(x_train=r.integers(0, 256, (24, 8, 8), dtype=np.uint8), y_train=np.repeat(np.arange(3), 8),
                  x_test=r.integers(0, 256, (9, 8, 8), dtype=np.uint8), y_test=np.repeat(np.arange(3), 3))
    arrays.update(changes)
    np.savez(path, **arrays)
    return str(path)


def test_unreadable_npz_datasets_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DatasetError, match=r"text\.npz: it is not an \.npz archive \(not a zip file.*np\.savez"):
        load_dataset(str(tmp_path / "text.npz"))
    good = Path(_npz(tmp_path / "good.npz")).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"cut\.npz"):
        load_dataset(str(tmp_path / "cut.npz"))
    strings = _npz(tmp_path / "strings.npz", y_train=np.repeat(np.array(["cat", "dog", "emu"]), 8))
    with pytest.raises(DatasetError, match=r"strings\.npz: train labels are strings \('cat', 'dog', 'emu' \.\.\.\); "
                                           r".*np\.unique\(y, return_inverse=True\)"):
        load_dataset(strings)


def test_nan_pixels_are_refused_by_every_command_that_loads_data(tmp_path, capsys):
    r = np.random.default_rng(1)
    x = r.uniform(size=(24, 8, 8)).astype(np.float32)
    x[5, 2, 3] = np.nan
    path = _npz(tmp_path / "nan.npz", x_train=x, x_test=r.uniform(size=(9, 8, 8)).astype(np.float32))
    with pytest.raises(DatasetError, match=r"nan \(npz:.*nan\.npz\): 1 train image\(s\) contain NaN or inf pixels "
                                           r"\(image 5\); fix or drop them"):
        load_dataset(path)
    for argv in (["data", "info", path],
                 ["score", "--dataset", path, "--num-models", "1", "--epochs", "1", "--out", str(tmp_path / "s.npz")],
                 ["baseline", "--dataset", path, "--ipc", "1", "--out", str(tmp_path / "b.json")],
                 ["distill", "--dataset", path, *TINY, "--out", str(tmp_path / "run")]):
        assert main(argv) == 1, argv
        assert "contain NaN or inf pixels" in _error_line(capsys), argv


def test_labels_outside_the_classes_are_refused_naming_the_split(tmp_path):
    y = np.repeat(np.arange(3), 8)
    y[0] = 99
    with pytest.raises(DatasetError, match=r"train labels go up to 99 but classes 3, 4, 5, 6, 7, \.\.\. \(96 in "
                                           r"all\) have no training image"):
        load_dataset(_npz(tmp_path / "a.npz", y_train=y))
    yt = np.repeat(np.arange(3), 3)
    yt[0] = 7
    with pytest.raises(DatasetError, match=r"test labels 7 are not training classes \(0\.\.2\)"):
        load_dataset(_npz(tmp_path / "b.npz", y_test=yt))
    np.savez(tmp_path / "c.npz", x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.arange(3),
             x_test=np.zeros((1, 4, 4), np.uint8), y_test=np.array([5]), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(DatasetError, match=r"test labels must lie in \[0, 3\) for the 3 declared classes"):
        load_dataset(str(tmp_path / "c.npz"))
    ds = load_dataset(_npz(tmp_path / "ok.npz"))  # labels 0..2 in both splits: 3 classes
    assert ds.class_names == ("0", "1", "2")


def test_image_size_advice_names_only_flags_the_commands_have(tmp_path, capsys):
    """Images of mixed sizes: the advice must not send `distill` users to a flag it lacks."""
    from PIL import Image

    from jaxdd.cli import build_parser

    for split in ("train", "val"):
        for c, size in (("a", 8), ("b", 10)):
            (tmp_path / split / c).mkdir(parents=True)
            Image.new("RGB", (size, size)).save(tmp_path / split / c / "0.png")
    assert main(["distill", "--dataset", str(tmp_path), *TINY, "--out", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert "images differ in size" in line
    distill_flags = set(build_parser()._subparsers._group_actions[0].choices["distill"]._option_string_actions)
    info_flags = set(build_parser()._subparsers._group_actions[0].choices["data"]._subparsers._group_actions[0]
                     .choices["info"]._option_string_actions)
    advised = set(__import__("re").findall(r"--[a-z][a-z-]*", line))
    assert advised and all(f in distill_flags or (f in info_flags and "jaxdd data info " + f in line)
                           for f in advised), advised


# ----------------------------------------------------------------------------- orbax teardown

def test_failed_restores_leave_no_unraisable_event_loop_errors(tmp_path, monkeypatch):
    """orbax closed its event loop while sibling tensorstore reads of a failed restore were in
    flight; they then raised RuntimeError('Event loop is closed') in tensorstore's thread (about
    one failed restore in five here before the fix)."""
    import gc

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(repr(u.exc_value)))
    for k in range(12):
        with Checkpointer(tmp_path / str(k)) as ck:
            ck.save(1, {"a": np.arange(64, dtype=np.float32), "b": np.ones(16, np.int32)})
            for f in glob.glob(str(tmp_path / str(k) / "1" / "state" / "**" / "d" / "*"), recursive=True):
                Path(f).write_bytes(Path(f).read_bytes()[:10])
            with pytest.raises(CheckpointError, match="step 1: cannot read"):
                ck.restore_latest({"a": np.zeros(64, np.float32), "b": np.zeros(16, np.int32)})
    time.sleep(0.5)
    gc.collect()
    assert seen == []


# ----------------------------------------------------------------------------- README claims

def test_readme_claims_match_the_code(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    assert "apt-get update && apt-get install -y dataset-fashion-mnist" in readme  # a command a user can run
    assert "apt-get install -y -qq dataset-fashion-mnist" in (REPO / ".ci" / "run").read_text()  # the same package
    # "a run can `--resume` with another process or device count when the global shapes match (a
    # clear error names the leaf otherwise)": a checkpoint recorded as written by 2 processes x 4
    # devices restores here when the shapes match, and a mismatch names both counts
    assert "a run can `--resume` with\nanother process or device count when the global shapes match" in readme
    with Checkpointer(tmp_path) as ck:
        with monkeypatch.context() as m:
            m.setattr(checkpoint, "_topology", lambda: (2, 4))
            ck.save(1, {"a": np.arange(2.0)})
        assert ck.describe(1)["leaves"][0]["shape"] == [2]
        np.testing.assert_array_equal(ck.restore({"a": np.zeros(2)})[1]["a"], np.arange(2.0))
        with pytest.raises(ValueError, match=r"saved by 2 process\(es\) with 4 device\(s\), this run has 1"):
            ck.restore({"a": np.zeros(4)})
