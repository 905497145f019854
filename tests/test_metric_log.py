"""TensorBoard metric logs: events written by MetricLog and the distillation driver, read back with an
independent TFRecord reader (framing and masked CRC-32C checked here, records decoded with the
protobuf Event message), applying TensorBoard's purge rule for resumed runs."""

import io
import struct
from pathlib import Path

import chex
import numpy as np
import pytest
from PIL import Image

from jaxdd.data import load_dataset
from jaxdd.distill import RealData, build_method, distill
from jaxdd.models import create_network
from jaxdd.utils.metric_log import MetricLog

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def _masked_crc(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: Path) -> list:
    """Every Event in one TFRecord file: uint64 length, masked CRC of it, data, masked CRC of data."""
    raw, events, pos = path.read_bytes(), [], 0
    while pos < len(raw):
        header = raw[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc_len,) = struct.unpack("<I", raw[pos + 8:pos + 12])
        assert crc_len == _masked_crc(header), f"bad length CRC in {path.name} at byte {pos}"
        data = raw[pos + 12:pos + 12 + length]
        (crc_data,) = struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])
        assert crc_data == _masked_crc(data), f"bad data CRC in {path.name} at byte {pos}"
        events.append(event_pb2.Event.FromString(data))
        pos += 16 + length
    return events


def read_logdir(logdir: Path) -> tuple[dict, dict]:
    """({tag: [(step, value)]}, {tag: [(step, PNG bytes)]}) over the event files in write order; a
    SessionLog START at step s drops earlier events with step >= s (TensorBoard's purge)."""
    files = [read_records(p) for p in logdir.glob("events.out.tfevents.*")]
    files.sort(key=lambda ev: ev[0].wall_time)
    scalars, images = {}, {}
    for events in files:
        for ev in events:
            if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
                for store in (scalars, images):
                    for tag in store:
                        store[tag] = [(s, v) for s, v in store[tag] if s < ev.step]
            for v in ev.summary.value:
                if v.HasField("image"):
                    images.setdefault(v.tag, []).append((ev.step, v.image.encoded_image_string))
                elif v.HasField("simple_value"):
                    scalars.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return scalars, images


def test_metric_log_scalars_lists_and_images(tmp_path):
    img = np.zeros((5, 7, 3), np.float32)
    img[1, 2] = 1.0
    with MetricLog(tmp_path, list_names=["cat", "dog"]) as log:
        log.scalars(0, {"loss": 2.5, "per_class": [0.25, 0.75], "note": "text", "bad": float("nan")})
        log.scalars(3, {"loss": 1.5, "per_class": np.array([1.0, 2.0, 3.0])}, prefix="train/")
        log.image(3, "grid", img)
    scalars, images = read_logdir(tmp_path)
    assert scalars == {"loss": [(0, 2.5)], "per_class/cat": [(0, 0.25)], "per_class/dog": [(0, 0.75)],
                       "train/loss": [(3, 1.5)], "train/per_class/0": [(3, 1.0)], "train/per_class/1": [(3, 2.0)],
                       "train/per_class/2": [(3, 3.0)]}  # names fit only 2-long lists; strings and NaN skipped
    (step, png), = images["grid"]
    back = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert step == 3 and back.shape == (5, 7, 3) and back[1, 2].tolist() == [255, 255, 255] and back.sum() == 3 * 255
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        MetricLog(tmp_path / "x").image(0, "bad", np.zeros((2, 3, 4, 5)))


def test_driver_events_match_history_after_kill_and_resume(tiny_npz, tmp_path):
    ds = load_dataset(tiny_npz)
    net = create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 1))
    real = RealData.from_dataset(ds)

    def method():
        return build_method("dm", net, ipc=1, batch_real=4, iterations=4)

    def kill(it, state, metrics):
        if it == 3:  # after the checkpoint at 2: the events of iteration 3 must be purged on resume
            raise KeyboardInterrupt

    common = dict(checkpoint_every=2, track_every=2, final_eval=False, progress=False)
    with pytest.raises(KeyboardInterrupt):
        distill(method(), real, ds, out=tmp_path, callback=kill, **common)
    result = distill(method(), real, ds, out=tmp_path, resume=True, **common)
    # logging does not perturb the run: the state equals an uninterrupted run's without TensorBoard
    plain = distill(method(), real, ds, out=tmp_path / "plain", tensorboard=False, **common)
    chex.assert_trees_all_equal(result.state, plain.state)
    assert not list((tmp_path / "plain").glob("events.out.tfevents.*"))
    scalars, images = read_logdir(tmp_path)
    losses = [(h["iteration"], h["loss"]) for h in result.history if "loss" in h]
    assert [s for s, _ in scalars["loss"]] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in scalars["loss"]], [v for _, v in losses], rtol=1e-6)  # float32 events
    grand = [(h["iteration"], h["grand_per_class"]) for h in result.history if "grand" in h]
    for c, name in enumerate(ds.class_names):
        got = scalars[f"grand_per_class/{name}"]
        assert [s for s, _ in got] == [s for s, _ in grand]
        np.testing.assert_allclose([v for _, v in got], [g[c] for _, g in grand], rtol=1e-6)
    assert [s for s, _ in images["synthetic"]] == [2, 4, 4]  # checkpoints at 2 and 4, then the final grid
    png = np.asarray(Image.open(io.BytesIO(images["synthetic"][-1][1])).convert("RGB"))
    np.testing.assert_array_equal(png, np.asarray(Image.open(tmp_path / "grid.png").convert("RGB")))


def test_expert_training_events_match_the_index(tmp_path):
    from jaxdd.data.dataset import from_arrays
    from jaxdd.experts import ExpertConfig, train_experts

    r = np.random.default_rng(0)
    ds = from_arrays("tiny8", r.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8), np.repeat(np.arange(3), 8),
                     r.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8), np.repeat(np.arange(3), 3))
    net = create_network("mlp-w16", num_classes=3, input_shape=(8, 8, 1))
    buf = train_experts(ds, net, tmp_path, 2, ExpertConfig(epochs=2, batch_size=8), progress=False)
    scalars, _ = read_logdir(tmp_path)
    for e in buf.index["experts"]:
        i = e["index"]
        assert [s for s, _ in scalars[f"expert_{i}/loss"]] == [1, 2]
        assert scalars[f"expert_{i}/loss"][-1][1] == pytest.approx(e["train_loss"], rel=1e-6)  # float32 event
        assert scalars[f"expert_{i}/train_acc"][-1][1] == pytest.approx(e["train_acc"], abs=1e-3)
    assert scalars["expert_test_acc"] == [(e["index"], pytest.approx(e["test_acc"], abs=1e-3))
                                          for e in buf.index["experts"]]


def test_writers_in_the_same_second_keep_both_files(tmp_path, monkeypatch):
    """tensorboardX names event files by the second and the host: a run resumed within the same
    second must not overwrite the interrupted run's events (the clock is frozen here)."""
    from tensorboardX import event_file_writer

    monkeypatch.setattr(event_file_writer.time, "time", lambda: 1_700_000_000.0)
    with MetricLog(tmp_path) as log:
        log.scalars(1, {"loss": 2.0})
    with MetricLog(tmp_path, purge_step=2) as log:
        log.scalars(2, {"loss": 1.0})
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    assert sorted(read_logdir(tmp_path)[0]["loss"]) == [(1, 2.0), (2, 1.0)]
