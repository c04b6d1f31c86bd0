"""The benchmarks run on tiny shapes and write JSON with the settings side by side; every training setting, from
upstream's step to the product's, follows the same loss curve on the same batches."""

from __future__ import annotations

import pytest

from bench import report

pytestmark = pytest.mark.slow


def test_train_benchmark_ladder_from_upstream_to_the_product(tmp_path):
    from bench import common, train

    out = tmp_path / "train.json"
    args = ["--shapes", "tiny", "--batch-size", "2", "--max-length", "512", "--steps", "2", "--warmup", "1"]
    res = train.main([*args, "--clips", "30", "--settings", "ladder,mem24", "--out", str(out)])
    names = list(res["settings"])
    assert names == [*train.SHORTHANDS["ladder"], "mem24"] and names[0] == "upstream" and names[-2] == "optimized"
    for a, b in zip(names, names[1:-1], strict=False):  # the ladder changes one option per row
        changed = {k for k in train.SETTINGS[a] if train.SETTINGS[a][k] != train.SETTINGS[b][k]}
        assert len(changed) == 1, (a, b, changed)
    up, opt = res["settings"]["upstream"], res["settings"]["optimized"]
    # upstream's step: concatenated rows, a mask always, every layer checkpointed (reentrant), full logits
    assert (up["options"]["packing"], up["options"]["mask"], up["options"]["full_logits"]) == ("concat", "always", True)
    assert up["options"]["gradient_checkpointing"] == "reentrant" and up["options"]["checkpointed_layers"] == 3
    # the optimized row is the product's configured defaults; every row trains with the product's LoRA dropout
    product = common.product_defaults()
    assert opt["options"]["packing"] == product["packing"] and opt["options"]["ce_chunk"] == product["ce_chunk"]
    assert opt["options"]["gradient_checkpointing"] == product["gradient_checkpointing"]
    assert res["lora"]["dropout"] == product["lora"]["dropout"] > 0
    assert res["settings"]["mem24"]["options"]["memory_limit_gb"] == product["preset_24gb"]["memory_limit_gb"]
    # a speaker longer than max_length: upstream's concatenated rows are the fill rows, so every setting trains on
    # the same batches and their loss curves agree within noise (LoRA dropout draws differently shaped masks once
    # the heads skip rows without a target), far less than the loss moved
    assert res["concat_rows_equal_fill_rows"] is True and res["padding_fraction"] == {"concat": 0.0, "fill": 0.0}
    moved = up["losses"][0] - up["losses"][-1]
    assert moved > 0.01 and set(res["loss_curve_max_abs_diff"]) == {f"{n} vs upstream" for n in names[1:]}
    assert max(res["loss_curve_max_abs_diff"].values()) < 0.01 * moved
    held_moved = res["heldout_loss_before"] - up["heldout_loss_after"]
    assert held_moved > 0.01 and max(abs(d) for d in res["heldout_loss_diff_vs_upstream"].values()) < 0.05 * held_moved
    for name, s in res["settings"].items():
        # the frozen-base model FLOPs are the same work for every setting; HFU adds what a setting recomputes
        assert s["model_tflops_per_step"] == up["model_tflops_per_step"] > 0 and 0 < s["mfu"] <= s["hfu"]
        if name != "upstream":
            assert res["ratios_vs_upstream"][name]["tokens_per_second"] > 0
    assert up["hardware_tflops_per_step"] > 1.5 * opt["hardware_tflops_per_step"]
    assert opt["checkpoint_plan"]["reason"] == "cpu" and opt["options"]["checkpointed_layers"] == 0
    assert res["peak_tflops_measured"] > 0 and "float32" in res["peak_matmul"]
    assert (tmp_path / "train.png").is_file()
    table = report.render([out])
    assert "| upstream | " in table and "| optimized | " in table and "| concat | always | 3 (reentrant) |" in table


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
    # the same model FLOPs for both; upstream's step computes more (recompute, full squares, full logits)
    up, opt = res["settings"]["upstream"], res["settings"]["optimized"]
    assert up["model_tflops_per_step"] == opt["model_tflops_per_step"] < up["hardware_tflops_per_step"]


def test_extract_benchmark_batches_give_identical_codes(tmp_path):
    from bench import extract

    res = extract.main(
        ["--shapes", "tiny", "--clips", "3", "--precisions", "tf32,bf16", "--out", str(tmp_path / "e.json")]
    )
    assert res["codes_identical_batched_vs_single"] is True
    assert res["bucketed_batches"]["real_time_factor"] > 0 and res["one_at_a_time"]["audio_seconds"] > 3
    # TF32 does not exist on the CPU: the same fp32 codes. bf16 runs in bf16: on the tiny random codec (no trained
    # margins between codebook entries) it changes most codes, so only that it changes some is checked here
    assert res["bucketed_batches_tf32"]["codes_agreement_vs_fp32"] == 1.0
    assert 0 < res["bucketed_batches_bf16"]["codes_agreement_vs_fp32"] < 1
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


def test_fullsize_script_runs_train_and_merge_on_the_tiny_model(tmp_path):
    from bench import fullsize

    args = ["--model", "tiny", "--device", "cpu", "--clips", "24", "--dir", str(tmp_path / "fs")]
    res = fullsize.main([*args, "--out", str(tmp_path / "fullsize.json")])
    assert res["passed"], res["stages"]
    assert res["train_summary"]["steps"] == 3 and res["merge_validation"]["nonzero_deltas"] > 0
    assert "| merge | yes |" in report.render([tmp_path / "fullsize.json"])


def test_device_site_never_carries_what_the_machine_has(tmp_path):
    from bench import device_site

    names = ["torch-9.0-py3-none-any.whl", "Google_Protobuf_Extra-1.0-py3-none-any.whl"]
    install, kept = device_site.plan([tmp_path / n for n in names], device_site.installed() | {"google-protobuf-extra"})
    assert install == [] and kept == ["google-protobuf-extra", "torch"]  # both installed here: neither is carried
    install, kept = device_site.plan([tmp_path / "no_such_dist-1.0-py3-none-any.whl"], device_site.installed())
    assert [w.name for w in install] == ["no_such_dist-1.0-py3-none-any.whl"] and kept == []
