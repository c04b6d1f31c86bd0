"""The fetch stage's dataset downloads and fishtune.hub's errors against a local Hub stand-in (tests/hubserver.py).

Base weights go through the installer of their own: tests/test_weights.py.

The Hub is not reachable here, so huggingface_hub's own client (``snapshot_download`` / ``hf_hub_download``)
talks to a loopback server that answers like the Hub, or reads a filled cache with ``HF_HUB_OFFLINE=1``. Nothing
in fishtune or huggingface_hub is mocked.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from conftest import HUB_TOKEN, TINY, run_inprocess
from fishtune import formats
from fishtune.datasets import MARKER
from hubclient import (
    REPO,
    fetch,
    grep_tree,
    hub_args,
    model_files,
    no_ambient_token,  # noqa: F401 (autouse fixture)
)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("no archive", "fi.tar.gz not found in dataset repository"),
    ],
)
def test_hub_errors_are_one_clear_line(tmp_path, fake_hub, tiny_model, finnish_data, monkeypatch, capsys, case, expect):
    files = model_files(tiny_model)
    fake_hub.add_repo(REPO, files)
    fake_hub.add_repo("me/data", {"README.md": b"# data\n"}, repo_type="dataset")
    dest = tmp_path / "m"
    extra = {
        "no archive": ["fetch.model=never", "fetch.dataset.repo_id=me/data", "fetch.dataset.archive=fi.tar.gz"],
    }[case]
    bad = "hf_THISisNOTtheRIGHTtoken42"
    capsys.readouterr()
    rc = fetch(tmp_path / "runs" / "r", finnish_data, *hub_args(fake_hub, tmp_path, dest), *extra)
    err = capsys.readouterr().err
    assert rc == 1 and expect in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Fix:" in err
    assert not dest.exists()
    assert bad not in err and not grep_tree(tmp_path / "runs", bad)


def _tar_dir(src: Path, arc: Path, top: str, extra: list[tuple[str, bytes]] = ()) -> Path:
    with tarfile.open(arc, "w:gz") as tf:
        tf.add(src, arcname=top)
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return arc


def test_dataset_from_hub_archive_then_prepare(tmp_path, fake_hub, finnish_data, tiny_model, monkeypatch):
    arc = _tar_dir(finnish_data, tmp_path / "fi.tar.gz", "finnish-1.0")
    fake_hub.add_repo("me/fi-speech", {"fi.tar.gz": arc.read_bytes(), "README.md": b"# fi\n"}, repo_type="dataset")
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    run_dir = tmp_path / "runs" / "r"
    ds = [
        "fetch.dataset.repo_id=me/fi-speech",
        "fetch.dataset.archive=fi.tar.gz",
        f"fetch.dataset.sha256={hashlib.sha256(arc.read_bytes()).hexdigest()}",
        f"hub.endpoint={fake_hub.url}",
        f"hub.cache_dir={tmp_path / 'hf-cache'}",
    ]
    missing = tmp_path / "nowhere"  # paths.data is not used when a dataset source is configured
    assert run_inprocess(run_dir, missing, tiny_model, "fetch,prepare", *ds) == 0
    raw = run_dir / "raw"
    assert json.loads((raw / MARKER).read_text())["source"]["repo_id"] == "me/fi-speech"
    stats = json.loads((run_dir / "clips" / "stats.json").read_text())
    assert stats["accepted"] == 12 and stats["rejected"] == 3  # the same dataset as tests/conftest.py's
    # rerun: the archive is already extracted, nothing is downloaded again
    n = len(fake_hub.seen("GET", "fi.tar.gz"))
    assert run_inprocess(run_dir, missing, tiny_model, "fetch", *ds) == 0
    assert len(fake_hub.seen("GET", "fi.tar.gz")) == n
    assert "already extracted" in (run_dir / "logs" / "fetch.log").read_text()
    assert not grep_tree(run_dir, HUB_TOKEN)

    # a pinned sha256 that does not match is refused
    bad = [d if not d.startswith("fetch.dataset.sha256") else "fetch.dataset.sha256=" + "0" * 64 for d in ds]
    assert run_inprocess(tmp_path / "runs" / "pin", missing, tiny_model, "fetch", *bad) == 1
    assert "not the pinned fetch.dataset.sha256" in (tmp_path / "runs" / "pin" / "logs" / "fetch.log").read_text()


def test_dataset_repo_layouts_and_local_archives(tmp_path, fake_hub, finnish_data, tiny_model):
    # an LJSpeech-layout dataset repo (no archive): the repo's files are the dataset
    wav = next(finnish_data.rglob("*.wav")).read_bytes()
    lj = {"metadata.csv": b"a1|Hei.|Hei.\na2|Moi.|Moi.\n", "wavs/a1.wav": wav, "wavs/a2.wav": wav}
    fake_hub.add_repo("me/lj", lj, repo_type="dataset")
    run_dir = tmp_path / "runs" / "lj"
    args = [
        "fetch.dataset.repo_id=me/lj",
        f"hub.endpoint={fake_hub.url}",
        f"hub.cache_dir={tmp_path / 'hf-cache'}",
    ]
    assert run_inprocess(run_dir, tmp_path / "nowhere", tiny_model, "fetch", *args) == 0
    from fishtune.config import load_config
    from fishtune.datasets import data_root

    cfg = load_config(
        [*TINY, "fetch.dataset.repo_id=me/lj", f"paths.runs={run_dir.parent}", f"run_name={run_dir.name}"]
    )
    assert data_root(cfg) == run_dir / "raw" / "lj"
    fmt, items = formats.read(data_root(cfg))
    assert fmt == "ljspeech" and [i.id for i in items if not i.problem] == ["lj/a1", "lj/a2"]

    # a local archive (fetch.dataset.path) is extracted; a local folder is used in place
    arc = _tar_dir(finnish_data, tmp_path / "local.tar.gz", "fi")
    run2 = tmp_path / "runs" / "local"
    assert run_inprocess(run2, tmp_path / "nowhere", tiny_model, "fetch", f"fetch.dataset.path={arc}") == 0
    assert formats.read(run2 / "raw" / "fi")[0] == "fish"
    cfg = load_config([*TINY, f"fetch.dataset.path={finnish_data}", f"paths.runs={tmp_path}"])
    assert data_root(cfg) == finnish_data

    # an archive with a path-traversal member is refused, naming it, and nothing is extracted
    evil = _tar_dir(finnish_data, tmp_path / "evil.tar.gz", "fi", [("../../escaped.txt", b"x")])
    fake_hub.add_repo("me/evil", {"data.tar.gz": evil.read_bytes()}, repo_type="dataset")
    run3 = tmp_path / "runs" / "evil"
    bad = ["fetch.dataset.repo_id=me/evil", "fetch.dataset.archive=data.tar.gz", *args[1:]]
    assert run_inprocess(run3, tmp_path / "nowhere", tiny_model, "fetch", *bad) == 1
    log = (run3 / "logs" / "fetch.log").read_text()
    assert "refusing to extract" in log and "../../escaped.txt" in log
    assert not (run3 / "raw").exists() and not list(tmp_path.rglob("escaped.txt"))
    # prepare then says what to do
    assert run_inprocess(run3, tmp_path / "nowhere", tiny_model, "prepare", *bad) == 1
    assert "run the fetch stage first" in (run3 / "logs" / "prepare.log").read_text()


def test_network_failures_are_transient_and_refusals_are_not():
    # publish retries only transient errors; the mark is set where the Hub error is explained
    import requests
    from huggingface_hub.errors import RevisionNotFoundError

    from fishtune import hub

    down = hub.explain(requests.ConnectionError("connection refused"), repo_id="me/x", revision=None)
    assert isinstance(down, hub.HubError) and down.transient and "not reachable" in down.message
    other = hub.explain(RuntimeError("boom"), repo_id="me/x", revision=None)
    assert other.transient and "failed:" in other.message
    missing = hub.explain(RevisionNotFoundError("no such revision"), repo_id="me/x", revision="v9")
    assert not missing.transient and "does not exist" in missing.message
