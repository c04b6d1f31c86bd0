"""The benchmarks run on tiny shapes, write JSON with the settings side by side, and the optimised training
setting follows the same loss curve as the upstream-equivalent one."""

from __future__ import annotations

import json

import pytest

from bench import report

pytestmark = pytest.mark.slow


def test_train_benchmark_settings_agree(tmp_path):
    from bench import train

    out = tmp_path / "train.json"
    res = train.main(
        [
            "--shapes",
            "tiny",
            "--batch-size",
            "2",
            "--max-length",
            "512",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--clips",
            "30",
            "--settings",
            "upstream,optimized,mem24",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["settings"].keys() == {"upstream", "optimized", "mem24"}
    # same batches (both filled), different memory/speed trade-offs: the same loss curve
    assert res["loss_curve_max_abs_diff"].keys() == {"mem24 vs optimized"}
    assert res["loss_curve_max_abs_diff"]["mem24 vs optimized"] < 1e-4
    up, opt = res["settings"]["upstream"], res["settings"]["optimized"]
    assert up["losses"][-1] < up["losses"][0] and opt["losses"][-1] < opt["losses"][0]  # both learn
    # padded vs filled rows of the same utterances: the same held-out loss after training, within noise
    assert abs(res["heldout_loss_diff_vs_upstream"]["optimized"]) < 0.02 * up["heldout_loss_after"]
    assert res["padding_fraction"]["fill"] == 0 < res["padding_fraction"]["pad"]
    for name in ("optimized", "mem24"):
        assert res["ratios_vs_upstream"][name]["tokens_per_second"] > 0
        assert res["settings"][name]["checkpoint_plan"]["reason"] == "cpu"
    assert up["options"]["gradient_checkpointing"] is True and up["options"]["ce_chunk"] == 0
    assert opt["options"]["ce_chunk"] > 0 and opt["options"]["checkpointed_layers"] == 0
    assert len(up["losses"]) == 3 and up["tokens_per_second"] > 0
    assert (tmp_path / "train.png").is_file()
    assert up["options"]["checkpointed_layers"] == 3  # all of the tiny model's 2 slow + 1 fast layers
    table = report.render([out])
    assert "| upstream | " in table and "| optimized | " in table and "x upstream" in table


def test_train_benchmark_ladder_changes_one_thing_at_a_time(tmp_path):
    from bench import train

    args = ["--shapes", "tiny", "--batch-size", "1", "--max-length", "256", "--steps", "1", "--warmup", "1"]
    res = train.main([*args, "--clips", "20", "--settings", "ladder", "--out", str(tmp_path / "ladder.json")])
    names = list(res["settings"])
    assert names == train.SHORTHANDS["ladder"] and names[0] == "upstream" and names[-1] == "optimized"
    for a, b in zip(names, names[1:], strict=False):
        changed = {k for k in train.SETTINGS[a] if train.SETTINGS[a][k] != train.SETTINGS[b][k]}
        assert len(changed) == 1, (a, b, changed)
    # every filled setting trains on the same batches as "+fill": the same loss curve
    assert set(res["loss_curve_max_abs_diff"]) == {f"{n} vs +fill" for n in names[2:]}
    assert max(res["loss_curve_max_abs_diff"].values()) < 1e-4


def test_train_benchmark_runs_on_the_real_s1_mini_shapes(tmp_path):
    # the released architecture (qk-norm, 16 query / 8 key-value heads of 128, a 155,776-way head, a 4-layer fast
    # transformer with 64-wide heads), random weights, one short row on the CPU: every path of both settings runs
    from bench import train

    args = ["--shapes", "s1-mini", "--batch-size", "1", "--max-length", "256", "--steps", "1", "--warmup", "1"]
    res = train.main([*args, "--clips", "8", "--settings", "upstream,optimized", "--out", str(tmp_path / "s1.json")])
    for name in ("upstream", "optimized"):
        s = res["settings"][name]
        assert "error" not in s and all(0 < x < 30 for x in s["losses"]), s.get("losses")
    assert res["settings"]["upstream"]["options"]["checkpointed_layers"] == 32  # 28 slow + 4 fast layers


def test_extract_benchmark_batches_give_identical_codes(tmp_path):
    from bench import extract

    res = extract.main(["--shapes", "tiny", "--clips", "3", "--bf16", "--out", str(tmp_path / "e.json")])
    assert res["codes_identical_batched_vs_single"] is True
    assert res["bucketed_batches"]["real_time_factor"] > 0 and res["one_at_a_time"]["audio_seconds"] > 3
    assert 0.5 < res["bucketed_batches_bf16"]["codes_agreement_vs_fp32"] <= 1  # bf16 changes some codes at most
    assert "| bucketed_batches_bf16 | " in report.render([tmp_path / "e.json"])


def test_synth_benchmark_reports_latency(tmp_path):
    from bench import synth

    res = synth.main(["--shapes", "tiny", "--frames", "12", "--sentences", "1", "--out", str(tmp_path / "s.json")])
    row = res["sentences"][0]
    assert 0 < row["first_audio_latency_s"] < row["generate_seconds"]
    assert "first audio s" in report.render([tmp_path / "s.json"])
    assert row["frames"] > 0 and row["rtf_total"] > 0


def test_report_refuses_other_json(tmp_path):
    other = tmp_path / "x.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(SystemExit, match="not a fishtune benchmark result"):
        report.render([other])
