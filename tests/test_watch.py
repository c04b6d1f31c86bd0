"""Watching a run: status.json (atomic, throttled, cost), progress bars on a terminal and plain lines in a pipe,
the hub sync during training (a failing Hub never stops training), publish, and the STAGE=all summary."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from conftest import ENTRYPOINT, HUB_TOKEN, ROOT, TINY, copy_run, run_inprocess

pytestmark = pytest.mark.slow


# -- status.json and the summary: units ---------------------------------------------------------------------------
def test_status_cost_throttle_and_summary(tmp_path, monkeypatch, capsys):
    from fishtune import status
    from fishtune.results import StageResult

    run = tmp_path / "runs" / "r"
    monkeypatch.delenv("GPU_HOURLY_USD", raising=False)
    monkeypatch.setenv("FISHTUNE_STATUS_INTERVAL", "3600")
    status.begin(run, ["prepare", "train"])
    status.stage_started(run, "prepare")
    doc = json.loads((run / "status.json").read_text())
    assert doc["state"] == "running" and doc["stage"] == "prepare" and doc["cost"]["run_usd"] == "unknown"
    status.progress("prepare", 3, 10, "clips", 1.5, 4.7)  # throttled: in memory now, on disk at the next write
    assert json.loads((run / "status.json").read_text())["progress"] == {}
    assert status.current()["progress"]["eta_seconds"] == 4.7
    status.stage_finished("prepare", StageResult("clips/ (9 clips, 0.50 h; 1 rejected)", data={"accepted": 9}))
    monkeypatch.setenv("GPU_HOURLY_USD", "3.60")
    status.stage_started(run, "train")
    status.train({"step": 5, "max_steps": 10, "loss": 1.25}, force=True)
    doc = json.loads((run / "status.json").read_text())
    assert doc["train"]["loss"] == 1.25 and doc["cost"]["gpu_hourly_usd"] == 3.6
    assert isinstance(doc["cost"]["stage_usd"], float) and doc["stages"]["prepare"]["state"] == "done"
    status.stage_finished("train", None, RuntimeError("boom"))
    status.end(False)
    assert status.cost_text(3600) == "$3.60 (1.00 h at $3.6/h)"
    monkeypatch.setenv("GPU_HOURLY_USD", "a lot")
    assert status.cost_text(60).startswith("unknown")
    monkeypatch.setenv("GPU_HOURLY_USD", "3.6")
    summary = status.summary(run, ok=False)
    out = capsys.readouterr().out
    assert re.search(r"prepare +done", out) and re.search(r"train +failed", out)
    assert "clips/ (9 clips, 0.50 h; 1 rejected)" in out
    assert "rerun the same command" in out and summary["stages"][1]["error"] == "boom"
    assert json.loads((run / "summary.json").read_text())["ok"] is False
    assert (run / "summary.txt").read_text().strip() in out


def _read_pty(fd: int, proc: subprocess.Popen, timeout: float = 60) -> str:
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks).decode(errors="replace")


PROGRESS_DEMO = (
    "import time, logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
    "from fishtune.progress import Progress\n"
    "p = Progress('demo', 6, unit='clips', every=0)\n"
    "for _ in range(6):\n    time.sleep(0.05); p.update()\n"
    "p.close()\n"
)


def test_progress_bar_on_a_terminal_plain_lines_in_a_pipe():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "100"}
    env.pop("TQDM_DISABLE", None)  # set by stages that ran in this process with stdout in a pipe
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    proc = subprocess.Popen([sys.executable, "-c", PROGRESS_DEMO], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = _read_pty(master, proc)
    proc.wait(timeout=60)
    os.close(master)
    assert "demo: 100%" in out and "6/6" in out and "<00:00" in out, out  # tqdm: elapsed<ETA
    assert "ETA" not in out and "demo: 3/6" not in out  # no plain progress lines on a terminal
    piped = subprocess.run([sys.executable, "-c", PROGRESS_DEMO], capture_output=True, text=True, env=env)
    assert "demo: 1/6 clips" in piped.stdout and "ETA" in piped.stdout and "%|" not in piped.stdout + piped.stderr


# -- a training run synced to a (flaky) Hub, with a status.json reader alongside -------------------------------------
@pytest.fixture(scope="module")
def synced(tmp_path_factory, packed_run, finnish_data, tiny_model):
    from hubserver import FakeHub

    hub = FakeHub(tokens={HUB_TOKEN})
    hub.fail_next["/commit/"] = 2  # the first two commits fail with a 500
    run = copy_run(packed_run, tmp_path_factory.mktemp("synced") / "runs" / "s")
    seen: list[dict] = []
    bad: list[str] = []
    stop = threading.Event()

    def watch():  # a dashboard polling status.json: every read must parse
        path = run / "status.json"
        while not stop.is_set():
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            try:
                seen.append(json.loads(text))
            except json.JSONDecodeError as err:
                bad.append(f"{err}: {text[:80]!r}")
            time.sleep(0.005)

    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TOKEN", HUB_TOKEN)
    mp.setenv("HF_TOKEN_FILE", str(run / "no-token-file"))
    mp.setenv("GPU_HOURLY_USD", "3.6")
    mp.setenv("FISHTUNE_STATUS_INTERVAL", "0")  # write on every step: the atomicity check below sees many writes
    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    try:
        rc = run_inprocess(
            run,
            finnish_data,
            tiny_model,
            "train,merge",
            "train.max_steps=12",
            "train.ckpt_every=4",
            "train.val_every=6",
            "hub.sync.repo_id=me/fi-checkpoints",
            f"hub.endpoint={hub.url}",
            "hub.sync.retry_seconds=0.2",
            "hub.sync.final_wait_seconds=60",
        )
    finally:
        stop.set()
        reader.join()
        mp.undo()
        hub.stop()
    assert rc == 0
    yield {"run": run, "hub": hub, "seen": seen, "bad": bad}


def test_hub_sync_retries_and_never_stops_training(synced):
    run, hub = synced["run"], synced["hub"]
    assert json.loads((run / "train" / "summary.json").read_text())["steps"] == 12  # training finished
    log = (run / "logs" / "train.log").read_text()
    assert log.count("hub sync to me/fi-checkpoints failed") == 2 and "training goes on" in log
    files = hub.files("me/fi-checkpoints")
    newest = run / "train" / "checkpoints" / "step_000000012.ckpt"
    assert files["checkpoints/step_000000012.ckpt"] == newest.read_bytes()
    pushed = json.loads(files["status.json"])
    assert pushed["stage"] == "train" and pushed["train"]["step"] >= 8
    assert all(
        r["token"] == HUB_TOKEN for r in hub.requests if not r["path"].startswith("/lfs/")
    )  # S3-like PUT: no token
    assert not (run / "train" / ".hub-sync").exists()


def test_status_json_is_atomic_and_follows_training(synced):
    run, seen = synced["run"], synced["seen"]
    assert not synced["bad"], synced["bad"][:3]
    assert len(seen) > 20
    steps = [d["train"]["step"] for d in seen if d.get("stage") == "train" and d.get("train", {}).get("step")]
    assert len(set(steps)) >= 3 and steps == sorted(steps)
    mid = next(d for d in seen if d.get("train", {}).get("step", 0) >= 4 and d["progress"].get("label") == "train")
    assert mid["progress"]["unit"] == "steps" and mid["progress"]["eta_seconds"] is not None
    assert {"loss", "tokens_per_second", "eta_seconds", "max_steps"} <= set(mid["train"])
    assert isinstance(mid["cost"]["stage_usd"], float) and mid["cost"]["gpu_hourly_usd"] == 3.6
    final = json.loads((run / "status.json").read_text())
    assert final["state"] == "done" and final["stages"]["train"]["state"] == "done"
    assert final["stages"]["train"]["train"]["step"] == 12 and final["stages"]["merge"]["state"] == "done"
    assert final["cost"]["run_usd"] == pytest.approx(final["elapsed_seconds"]["run"] / 3600 * 3.6, abs=1e-3)
    assert "cost so far: $" in (run / "logs" / "train.log").read_text()  # printed at each validation
    assert (run / "train" / "tensorboard").is_dir()


def test_hub_down_for_the_whole_run_does_not_stop_training(tmp_path, packed_run, finnish_data, tiny_model, monkeypatch):
    monkeypatch.setenv("HF_TOKEN_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    run = copy_run(packed_run, tmp_path / "runs" / "down")
    rc = run_inprocess(
        run,
        finnish_data,
        tiny_model,
        "train",
        "train.max_steps=4",
        "train.ckpt_every=2",
        "train.val_every=4",
        "hub.sync.repo_id=me/unreachable",
        "hub.endpoint=http://127.0.0.1:9",  # nothing listens on the discard port
        "hub.sync.retry_seconds=0.1",
        "hub.sync.final_wait_seconds=1",
    )
    assert rc == 0
    log = (run / "logs" / "train.log").read_text()
    assert "hub sync to me/unreachable failed" in log and "gave up" in log
    assert json.loads((run / "train" / "summary.json").read_text())["steps"] == 4


# -- publish ------------------------------------------------------------------------------------------------------
def test_publish_uploads_model_lora_samples_and_card(tmp_path, synced, finnish_data, tiny_model):
    from hubserver import FakeHub

    run = copy_run(synced["run"], tmp_path / "runs" / "pub", skip=())
    assert run_inprocess(run, finnish_data, tiny_model, "synthesize", "synthesize.text=Hei") == 0
    token_file = tmp_path / "secrets" / "hf_token"
    token_file.parent.mkdir()
    token_file.write_text(HUB_TOKEN + "\n")
    hub = FakeHub(tokens={HUB_TOKEN})
    try:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN_FILE": str(token_file), "HF_HUB_DISABLE_TELEMETRY": "1"}
        env.pop("HF_TOKEN", None)
        cmd = [
            sys.executable,
            str(ENTRYPOINT),
            "publish",
            *TINY,
            f"paths.data={finnish_data}",
            f"paths.runs={run.parent}",
            f"run_name={run.name}",
            f"model.path={tiny_model}",
            "publish.repo_id=me/tiny-fi",
            "publish.private=false",
            "model.license=cc-by-nc-sa-4.0",  # the released s1-mini's licence: the card must say it is inherited
        ]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        files = hub.files("me/tiny-fi")
        for name in ("model.pth", "config.json", "codec.pth", "tokenizer.tiktoken", "lora/lora.pth", "README.md"):
            assert name in files, sorted(files)
        assert files["model.pth"] == (run / "model" / "model.pth").read_bytes()
        assert "samples/000.wav" in files and "training/metrics.jsonl" in files
        card = files["README.md"].decode()
        train = json.loads((run / "train" / "summary.json").read_text())
        assert "license: cc-by-nc-sa-4.0" in card and "(CC-BY-NC-SA-4.0)" in card and "no commercial use" in card
        assert "the repo will be public" in p.stdout + p.stderr and "CC-BY-NC-SA-4.0" in p.stdout + p.stderr
        assert "| Steps | 12 of 12 |" in card and f"{train['best_val_loss']:.4f}" in card
        assert "12 clips, 0.01 hours" in card and "| Language | fi |" in card
        assert all(
            r["token"] == HUB_TOKEN for r in hub.requests if not r["path"].startswith("/lfs/")
        )  # S3-like PUT: no token
        leaks = [f for f, data in files.items() if HUB_TOKEN.encode() in data]
        assert not leaks and HUB_TOKEN not in p.stdout + p.stderr
        assert not [q for q in run.rglob("*") if q.is_file() and HUB_TOKEN.encode() in q.read_bytes()]
        # publishing again uploads nothing new (huggingface_hub skips unchanged files)
        commits = len(hub.commits("me/tiny-fi"))
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and len(hub.commits("me/tiny-fi")) == commits
    finally:
        hub.stop()
    # without publish.repo_id the stage does nothing (STAGE=all stays offline)
    assert run_inprocess(run, finnish_data, tiny_model, "publish") == 0
    assert "no publish.repo_id set" in (run / "logs" / "publish.log").read_text()


def test_summary_is_built_from_stage_results_and_the_layout(tmp_path, monkeypatch):
    """Skipped or done and the outputs line come from each stage's StageResult; the next steps name the run's
    files where the layout puts them (here merge.output elsewhere)."""
    from fishtune import status
    from fishtune.layout import RunLayout
    from fishtune.results import StageResult

    root = tmp_path / "runs" / "r"
    run = RunLayout(root, model=tmp_path / "elsewhere", samples=root / "s", report=root / "report", raw=root / "raw")
    monkeypatch.setenv("FISHTUNE_STATUS_INTERVAL", "3600")
    status.begin(run, ["fetch", "train", "merge"])
    status.stage_started(run, "fetch")
    status.stage_finished("fetch", StageResult("nothing to fetch (weights present)", skipped=True))
    status.stage_started(run, "train")
    status.stage_finished("train", StageResult("train/lora.pth (3 steps, val loss 2.000 -> 1.500)", data={"steps": 3}))
    run.merged_model.parent.mkdir(parents=True)
    run.merged_model.write_bytes(b"weights")
    status.stage_started(run, "merge")
    status.stage_finished("merge", StageResult("merged", data={"max_rel_diff": 0.001}))
    status.end(True)
    doc = status.summary(run, ok=True)
    assert [(r["state"], r["outputs"]) for r in doc["stages"]] == [
        ("skipped", "nothing to fetch (weights present)"),
        ("done", "train/lora.pth (3 steps, val loss 2.000 -> 1.500)"),
        ("done", "merged"),
    ]
    assert f"the fine-tuned model: {run.model} (Fish Speech layout; model card in README.md)" in doc["next"]
    assert not any("samples" in s for s in doc["next"])  # none made
    assert json.loads(run.summary.read_text())["stages"][0]["state"] == "skipped"
    assert status.read(run)["stages"]["merge"]["state"] == "done"
    with pytest.raises(TypeError, match="stage train returned dict"):
        status.stage_finished("train", {"steps": 3})  # a stage must return a StageResult
