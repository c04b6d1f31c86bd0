"""Extraction pieces: batching by audio length, OOM back-off on the real tiny codec, the content-keyed cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fishtune import tokens
from fishtune.errors import StageFailed
from fishtune.extraction import Extractor, iter_batches, plan_batches
from fishtune.modeling import codec as codec_mod


def _rows(durations):
    return [{"id": f"s/c{i}", "duration": d} for i, d in enumerate(durations)]


def test_batches_are_sorted_and_bounded_by_padded_seconds():
    rows = _rows([5, 1, 1, 2, 10, 3, 1, 4])
    batches = plan_batches(rows, max_seconds=8, max_clips=3)
    flat = [r["duration"] for b in batches for r in b]
    assert flat == sorted(flat)
    assert sorted(r["id"] for b in batches for r in b) == sorted(r["id"] for r in rows)
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(r["duration"] for r in b) <= 8
    assert [len(b) for b in batches] == [3, 2, 1, 1, 1]  # [1,1,1] [2,3] [4] [5] [10]


class OomAboveTwo:
    """The real tiny codec behind a device that runs out of memory on batches of more than two clips."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, waves):
        self.calls.append(len(waves))
        if len(waves) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return codec_mod.encode(self.model, waves, "cpu")


@pytest.fixture(scope="module")
def tiny_codec(tiny_model):
    return codec_mod.load_codec(tiny_model)


def test_oom_halves_the_batch_and_codes_are_unchanged(tiny_codec):
    torch.manual_seed(0)
    waves = [torch.randn(44100 + 4000 * i) * 0.1 for i in range(5)]
    fake = OomAboveTwo(tiny_codec)
    ex = Extractor(fake)
    codes = ex.encode(waves, [f"c{i}" for i in range(5)])
    assert fake.calls == [5, 2, 3, 1, 2]
    assert ex.oom_events == 2 and ex.limit_scale == 0.25
    one_by_one = [codec_mod.encode(tiny_codec, [w], "cpu")[0] for w in waves]
    for a, b in zip(codes, one_by_one, strict=True):
        assert a.shape == b.shape
        assert torch.equal(a, b)


def test_oom_on_a_single_clip_fails_with_a_hint(tiny_codec):
    def always_oom(waves):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(StageFailed, match="single clip c0.*max_duration"):
        Extractor(always_oom).encode([torch.zeros(1000)], ["c0"])


def test_other_errors_are_not_swallowed(tiny_codec):
    def broken(waves):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        Extractor(broken).encode([torch.zeros(10), torch.zeros(10)], ["a", "b"])


def test_token_cache_is_keyed_by_audio_and_codec(tmp_path):
    codes = np.arange(12).reshape(3, 4)
    tokens.save(tmp_path, "spk/a", codes, {"audio_sha256": "A", "codec_sha256": "C"})
    assert tokens.is_current(tmp_path, "spk/a", "A", "C")
    assert not tokens.is_current(tmp_path, "spk/a", "B", "C")  # audio changed
    assert not tokens.is_current(tmp_path, "spk/a", "A", "D")  # codec changed
    npy = tmp_path / "spk" / "a.npy"
    npy.write_bytes(npy.read_bytes()[:-8])  # truncated by a crash or a full disk
    assert not tokens.is_current(tmp_path, "spk/a", "A", "C")
    with pytest.raises(Exception, match="truncated or corrupt"):
        tokens.load(npy)


def test_encode_decode_shapes(tiny_codec):
    wave = torch.randn(44100 * 2) * 0.1
    (codes,) = codec_mod.encode(tiny_codec, [wave], "cpu")
    assert codes.shape == (4, int(np.ceil(wave.numel() / 2048)))
    audio = codec_mod.decode(tiny_codec, codes)
    assert audio.ndim == 1 and audio.numel() == codes.shape[1] * 2048


def test_workers_share_one_plan_and_an_oom_splits_only_what_is_pending():
    rows = _rows([1, 1, 1, 2, 2, 3, 3, 4, 5, 10, 1, 2])
    plan = plan_batches(rows, max_seconds=8, max_clips=4)
    ex = Extractor(lambda waves: waves)
    parts = [list(iter_batches(rows, 8, 4, ex, part=(i, 3))) for i in range(3)]
    assert [parts[i % 3][i // 3] for i in range(len(plan))] == plan  # worker i: batches i, i+3, ...
    assert sorted(r["id"] for p in parts for b in p for r in b) == sorted(r["id"] for r in rows)
    # after an OOM (limit x0.25) every batch still to come is split to 2 s of padded audio
    stream = iter_batches(rows, 8, 4, ex)
    first = next(stream)
    ex.limit_scale = 0.25
    rest = list(stream)
    assert first == plan[0] and len(first) == 4
    assert all(len(b) == 1 or len(b) * max(r["duration"] for r in b) <= 2 for b in rest)
    assert sorted(r["id"] for b in [first, *rest] for r in b) == sorted(r["id"] for r in rows)


@pytest.mark.slow
def test_two_extraction_processes_write_the_same_token_files(tmp_path, packed_run, finnish_data, tiny_model):
    from conftest import copy_run, run_inprocess

    run = copy_run(packed_run, tmp_path / "runs" / "two", skip=("tokens", "packed", "train", "model", "samples"))
    two = ("extract.device=cpu", "extract.devices=2")
    assert run_inprocess(run, finnish_data, tiny_model, "extract", *two) == 0
    summary = json.loads((run / "tokens" / "summary.json").read_text())
    assert (summary["processes"], summary["encoded"], summary["clips"]) == (2, 12, 12)
    mine = sorted(p.relative_to(run / "tokens") for p in (run / "tokens").rglob("*") if p.is_file())
    single = sorted(p.relative_to(packed_run / "tokens") for p in (packed_run / "tokens").rglob("*") if p.is_file())
    assert mine == single and len([p for p in mine if p.suffix == ".npy"]) == 12
    for rel in mine:
        if rel.suffix == ".npy":  # the single-process run's files, byte for byte
            assert (run / "tokens" / rel).read_bytes() == (packed_run / "tokens" / rel).read_bytes(), rel
    assert run_inprocess(run, finnish_data, tiny_model, "extract", *two) == 0  # the cache works the same
    assert json.loads((run / "tokens" / "summary.json").read_text())["cached"] == 12


def test_planning_bench_plans_once_with_the_same_batches(tmp_path):
    from bench import plan

    res = plan.main(["--clips", "300,1200", "--out", str(tmp_path / "plan.json")])
    assert [r["clips"] for r in res["sizes"]] == [300, 1200]
    assert all(r["same_batches"] and r["batches"] > 10 for r in res["sizes"])
    assert res["sizes"][1]["before_seconds"] > res["sizes"][1]["after_seconds"]
