#!/usr/bin/env python3
"""Smoke test of a built image, run INSIDE it: the image's metadata, then STAGE=doctor and STAGE=all on the
tiny model and espeak-ng Finnish clips that the image itself makes, asserting the outputs come out.

    python3 docker/smoke_test.py [IMAGE]          (make image-test; ENGINE=auto|docker|buildah)

Stdlib only (runs on the host). With docker the stages run through the image's ENTRYPOINT (`docker run -e
STAGE=...`); with buildah (no daemon here) the ENTRYPOINT read from the image config is run with
`buildah run --isolation chroot`, as the image's user, with host folders mounted at /data, /runs and /cache.
Ends with 'N passed, N failed'; exit 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_ENV = {
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "PYTORCH_ALLOC_CONF": "expandable_segments:True",
}
EXPECTED_LABELS = (
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "io.github.fishtune.torch",
    "io.github.fishtune.protobuf",
    "io.github.fishtune.weights-baked",
)
TINY = ["model=tiny", "doctor.min_free_gb=1"]
PRODUCING = ("prepare", "extract", "pack", "train", "merge", "synthesize")
SERVE_PORT = "8080/tcp"
# Runs inside the image (stdlib only): STAGE=serve through the image's entrypoint in the background, one API
# request over loopback, then SIGTERM (what docker stop and Kubernetes send); prints one JSON line. argv: the
# entrypoint, then Hydra overrides. The same for docker and buildah: no port publishing or host networking needed.
SERVE_PROBE = r"""
import json, os, signal, subprocess, sys, time, urllib.error, urllib.request
entry, overrides = json.loads(sys.argv[1]), sys.argv[2:]
info = "/runs/" + os.environ["RUN_NAME"] + "/serve.json"
if os.path.exists(info):
    os.remove(info)
out = {"started": False}
log = open("/tmp/fishtune-serve.log", "w+")  # a file, not a pipe: a chatty server never blocks on it
proc = subprocess.Popen(entry + overrides + ["serve.port=0"], env={**os.environ, "STAGE": "serve"},
                        stdout=log, stderr=subprocess.STDOUT, text=True)
try:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not os.path.exists(info):
        time.sleep(0.5)
    if os.path.exists(info):
        srv = json.load(open(info))
        out.update(started=True, model=srv["model"], auth=srv["auth"])
        req = urllib.request.Request(
            srv["url"] + "v1/audio/speech", method="POST",
            data=json.dumps({"input": "Hyvää päivää, klo 9.15.", "response_format": "wav"}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["SERVE_TOKEN"]})
        t0 = time.time()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                body = r.read()
                out.update(status=r.status, type=r.headers["Content-Type"], bytes=len(body), riff=body[:4] == b"RIFF",
                           seconds=float(r.headers.get("X-Audio-Seconds", 0)), latency=round(time.time() - t0, 2))
        except urllib.error.HTTPError as err:
            out.update(status=err.code, error=err.read()[:500].decode(errors="replace"))
finally:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.seek(0)
    out.update(exit=proc.returncode, log=log.read()[-2000:])
    print(json.dumps(out))
"""


def engine_name() -> str:
    return subprocess.run(
        [str(ROOT / "docker" / "engine.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()


class Image:
    """Runs commands in the image with /data, /runs and /cache mounted from a host folder."""

    def __init__(self, name: str, engine: str, work: Path, gpus: bool = False):
        self.name, self.engine, self.work, self.gpus = name, engine, work, gpus
        self.mounts = {"/data": work / "data", "/runs": work / "runs", "/cache": work / "cache"}
        for path in self.mounts.values():
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # the image runs as an unprivileged user
        self.config = self._config()
        self.ctr: str | None = None

    def _config(self) -> dict:
        if self.engine == "docker":
            out = subprocess.run(["docker", "image", "inspect", self.name], capture_output=True, text=True, check=True)
            return json.loads(out.stdout)[0]["Config"]
        out = subprocess.run(
            ["buildah", "inspect", "--type", "image", self.name], capture_output=True, text=True, check=True
        )
        info = json.loads(out.stdout)
        return info["Docker"]["config"] if info.get("Docker", {}).get("config") else info["OCIv1"]["config"]

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.config.get("Env") or [])

    def run(self, argv: list[str] | None, env: dict[str, str], *, entrypoint: bool = True, timeout: int = 1800):
        """Run the image's ENTRYPOINT with ``argv`` (or, with entrypoint=False, ``argv`` as the command)."""
        argv = argv or []
        if self.engine == "docker":
            cmd = ["docker", "run", "--rm", *(["--gpus", "all"] if self.gpus else [])]
            for dst, src in self.mounts.items():
                cmd += ["-v", f"{src}:{dst}"]
            for k, v in env.items():
                cmd += ["-e", f"{k}={v}"]
            if not entrypoint:
                cmd += ["--entrypoint", argv[0]]
                argv = argv[1:]
            cmd += [self.name, *argv]
        else:
            if self.ctr is None:
                self.ctr = subprocess.run(
                    ["buildah", "from", "--pull-never", self.name], capture_output=True, text=True, check=True
                ).stdout.strip()
                # buildah 1.28 mounts the image's own VOLUMEs and the -v folders in random order, so a -v folder
                # is sometimes hidden; dropping the VOLUMEs from this working container (not the image) fixes it.
                drop = [a for v in self.config.get("Volumes") or {} for a in ("--volume", f"{v}-")]
                if drop:
                    subprocess.run(["buildah", "config", *drop, self.ctr], capture_output=True, check=True)
            cmd = ["buildah", "run", "--isolation", "chroot"]
            for dst, src in self.mounts.items():
                cmd += ["-v", f"{src}:{dst}"]
            for k, v in env.items():
                cmd += ["-e", f"{k}={v}"]
            full = [*(self.config.get("Entrypoint") or []), *argv] if entrypoint else argv
            cmd += [self.ctr, "--", *full]
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        proc.seconds = time.time() - started  # type: ignore[attr-defined]
        return proc

    def close(self) -> None:
        if self.ctr:
            subprocess.run(["buildah", "rm", self.ctr], capture_output=True)
            self.ctr = None


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {name}" + (f": {detail}" if detail else ""), flush=True)
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def tail(proc, n: int = 3000) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-n:]}\n--- stderr\n{proc.stderr[-n:]}"


def serve_check(img: Image, c: Checks, overrides: list[str], run_env: dict[str, str]) -> None:
    """STAGE=serve in the image (token required: the image binds 0.0.0.0): one speech request, then stop."""
    entry = img.config.get("Entrypoint") or ["python", "/app/entrypoint.py"]
    env = {**run_env, "SERVE_TOKEN": "smoke-test-serve-token"}
    p = img.run(["python", "-c", SERVE_PROBE, json.dumps(entry), *overrides], env, entrypoint=False, timeout=600)
    try:
        res = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        c.check("STAGE=serve probe ran", False, tail(p))
        return
    log = res.get("log", "")
    started = bool(res.get("started"))
    c.check("STAGE=serve started", started, f"model {res.get('model')}" if started else log)
    c.check("serve: token required on 0.0.0.0", res.get("auth") is True, str(res.get("auth")))
    ok = res.get("status") == 200 and res.get("riff") and res.get("type") == "audio/wav" and res.get("seconds", 0) > 0
    detail = f"{res.get('bytes')} bytes, {res.get('seconds')} s of audio in {res.get('latency')} s"
    c.check("serve: POST /v1/audio/speech -> wav", bool(ok), detail if ok else f"{res}")
    stopped = res.get("exit") == 0
    c.check("serve: stops on SIGTERM with exit 0", stopped, "exit 0" if stopped else f"exit {res.get('exit')}\n{log}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Smoke-test a built fishtune image inside the image.")
    ap.add_argument("image", nargs="?", default=os.environ.get("IMAGE", "localhost/fishtune:dev"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder (data, runs, cache)")
    ap.add_argument("--override", action="append", default=[], help="extra Hydra override (repeatable)")
    ap.add_argument("--baked", action="store_true", help="the image has baked weights: check them and doctor's report")
    ap.add_argument("--gpus", action="store_true", help="docker run --gpus all; doctor must then find CUDA")
    ap.add_argument("--secret-file", type=Path, default=None, help="a build secret that must not be in the image")
    args = ap.parse_args(argv)

    engine = engine_name()
    work = Path(tempfile.mkdtemp(prefix="fishtune-smoke."))
    work.chmod(0o755)
    if args.gpus and engine != "docker":
        ap.error("--gpus needs ENGINE=docker (buildah run has no GPU support here)")
    img = Image(args.image, engine, work, gpus=args.gpus)
    c = Checks()
    started = time.time()
    print(f"smoke test of {args.image} with {engine} in {work}", flush=True)
    try:
        # 1. The image's metadata: what docker run relies on.
        cfg = img.config
        c.check("entrypoint", cfg.get("Entrypoint") == ["python", "/app/entrypoint.py"], str(cfg.get("Entrypoint")))
        c.check("no default args", not cfg.get("Cmd"), f"Cmd {cfg.get('Cmd')} (would be passed to the entrypoint)")
        c.check("non-root user", cfg.get("User") not in (None, "", "root", "0", "0:0"), f"User {cfg.get('User')!r}")
        c.check("volumes", set(cfg.get("Volumes") or {}) == {"/data", "/runs", "/cache"}, str(cfg.get("Volumes")))
        c.check("serve port exposed", SERVE_PORT in (cfg.get("ExposedPorts") or {}), str(cfg.get("ExposedPorts")))
        env = img.env
        for key, want in EXPECTED_ENV.items():
            c.check(f"env {key}", env.get(key) == want, str(env.get(key)))
        labels = cfg.get("Labels") or {}
        if not args.baked:
            lic = labels.get("org.opencontainers.image.licenses")
            c.check("licence label (code only, no weights)", lic == "Apache-2.0", str(lic))
        missing = [k for k in EXPECTED_LABELS if not labels.get(k)]
        c.check(
            "OCI labels",
            not missing,
            "missing " + ", ".join(missing)
            if missing
            else ", ".join(f"{k.rsplit('.', 1)[-1]}={labels[k]}" for k in EXPECTED_LABELS),
        )
        if args.secret_file:
            secret = args.secret_file.read_text().strip()
            hist = subprocess.run(
                ["docker", "history", "--no-trunc", args.image]
                if engine == "docker"
                else ["buildah", "inspect", "--type", "image", args.image],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            c.check("secret not in image metadata/history", bool(secret) and secret not in hist)

        if args.baked:
            model_dir = "/opt/models/openaudio-s1-mini"
            ref = labels.get("io.github.fishtune.weights", "")
            c.check(
                "baked: weights label", "@" in ref and labels.get("io.github.fishtune.weights-baked") != "none", ref
            )
            c.check("baked: FISHTUNE_MODEL points at them", env.get("FISHTUNE_MODEL") == model_dir)
            lic = labels.get("org.opencontainers.image.licenses")
            c.check(
                "baked: labelled with the weights' licence",
                "CC-BY-NC-SA-4.0" in str(lic) and labels.get("io.github.fishtune.weights-license") == "CC-BY-NC-SA-4.0",
                str(lic),
            )
            p = img.run(
                ["sh", "-c", f"cd {model_dir} && sha256sum -c --quiet SHA256SUMS && cat WEIGHTS_SOURCE"],
                {},
                entrypoint=False,
            )
            c.check("baked: SHA256SUMS verify inside the image", p.returncode == 0, p.stdout.strip() or tail(p))

        # No package manager leftovers: .deb files, apt lists.
        p = img.run(
            # (as the image's user: apt's partial/ folder is unreadable, hence 2>/dev/null; the files would not be)
            [
                "sh",
                "-c",
                "find /var/cache/apt /var/lib/apt/lists -type f \\( -name '*.deb' -o -name '*_Packages*' \\)"
                " 2>/dev/null; true",
            ],
            {},
            entrypoint=False,
        )
        left = p.stdout.split()
        c.check(
            "no apt leftovers (.deb, package lists)", p.returncode == 0 and not left, f"{len(left)} files: {left[:3]}"
        )

        # 2. The process inside: unprivileged, usage errors exit 2, help works.
        p = img.run(["id", "-u"], {}, entrypoint=False)
        c.check("runs as non-root", p.returncode == 0 and p.stdout.strip() not in ("", "0"), p.stdout.strip())
        p = img.run([], {})
        ok = p.returncode == 2 and "no stage given" in p.stderr
        c.check("no stage -> usage error (exit 2)", ok, "" if ok else tail(p, 400))
        p = img.run(["--help"], {})
        ok = p.returncode == 0 and "doctor" in p.stdout
        c.check("--help lists the stages", ok, "" if ok else tail(p, 400))
        probe = (
            "import json, os, fishtune.stages as s; "
            "print(json.dumps([s.CHAIN, os.path.isfile('/app/configs/preset/tiny.yaml')]))"
        )
        p = img.run(["python", "-c", probe], {}, entrypoint=False)
        chain, has_preset = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else ([], False)
        c.check("stage chain", bool(chain), " -> ".join(chain) or tail(p))
        # The tiny run's overrides, as `make demo` uses them (preset=tiny where the configs have that preset).
        tiny = [*TINY, *(["preset=tiny"] if has_preset else []), *args.override]
        tiny += ["doctor.require_gpu=true"] if args.gpus else []
        print(f"overrides: {' '.join(tiny)}", flush=True)

        # 3. The demo inputs, made inside the image: espeak-ng Finnish clips + the tiny model.
        p = img.run(["python", "-m", "fishtune.demo", "/data/fi", "/cache/models/tiny"], {}, entrypoint=False)
        n_wav = len(list((work / "data").rglob("*.lab")))
        c.check(
            "demo data (espeak-ng + ffmpeg in the image)",
            p.returncode == 0 and n_wav >= 12,
            f"{n_wav} transcripts, {p.seconds:.0f} s" if p.returncode == 0 else tail(p),
        )
        c.check("tiny model", (work / "cache/models/tiny/model.pth").is_file())

        run_env = {"FISHTUNE_DATA": "/data/fi", "FISHTUNE_MODEL": "/cache/models/tiny", "RUN_NAME": "smoke"}
        run_dir = work / "runs" / "smoke"

        # 4. STAGE=doctor through the entrypoint.
        p = img.run(tiny, {**run_env, "STAGE": "doctor"})
        c.check("STAGE=doctor exits 0", p.returncode == 0, f"{p.seconds:.0f} s" if p.returncode == 0 else tail(p))
        doctor = json.loads((run_dir / "doctor.json").read_text()) if (run_dir / "doctor.json").is_file() else {}
        rows = {r["check"]: r for r in doctor.get("checks", [])}
        c.check("doctor.json written", bool(rows), ", ".join(f"{k}={v['status']}" for k, v in rows.items()))
        c.check("doctor: no FAIL", doctor and all(r["status"] != "FAIL" for r in rows.values()))
        model_row = rows.get("base model", {}).get("detail", "")
        c.check(
            "doctor reports where the weights came from", "local folder" in model_row or "baked" in model_row, model_row
        )
        c.check("doctor: protobuf 3.20.x", doctor.get("versions", {}).get("protobuf", "").startswith("3.20."))
        # train.compile=true cannot work without a compiler: doctor says so in one line (unless one is installed)
        p = img.run([*tiny, "train.compile=true"], {**run_env, "RUN_NAME": "compile", "STAGE": "doctor"})
        doc = work / "runs" / "compile" / "doctor.json"
        row = (
            next((r for r in json.loads(doc.read_text())["checks"] if r["check"] == "compile"), {})
            if doc.is_file()
            else {}
        )
        has_cc = img.run(["sh", "-c", "command -v cc gcc clang c++ g++"], {}, entrypoint=False).stdout.strip()
        refused = p.returncode == 1 and row.get("status") == "FAIL" and "train.compile=false" in row.get("detail", "")
        c.check(
            "doctor: train.compile=true refused without a compiler"
            if not has_cc
            else "doctor: compiler for train.compile",
            refused if not has_cc else row.get("status") == "ok",
            row.get("detail", "") or tail(p),
        )
        c.check(
            "doctor: torchcodec loads FFmpeg",
            rows.get("torchcodec", {}).get("status") == "ok",
            rows.get("torchcodec", {}).get("detail", ""),
        )

        if args.baked:  # doctor on the baked weights (the default model folder), not the demo's tiny model
            p = img.run(
                [*tiny, "doctor.min_free_gb=0"], {"FISHTUNE_DATA": "/data/fi", "RUN_NAME": "baked", "STAGE": "doctor"}
            )
            row = (
                next(
                    (
                        r
                        for r in json.loads((work / "runs/baked/doctor.json").read_text())["checks"]
                        if r["check"] == "base model"
                    ),
                    {},
                )
                if (work / "runs/baked/doctor.json").is_file()
                else {}
            )
            c.check(
                "baked: doctor reports baked weights",
                p.returncode == 0 and "baked into the image" in row.get("detail", ""),
                row.get("detail", "") if p.returncode == 0 else tail(p),
            )

        # 5. STAGE=all: every stage of the chain runs and leaves its outputs.
        p = img.run(tiny, {**run_env, "STAGE": "all"})
        c.check("STAGE=all exits 0", p.returncode == 0, f"{p.seconds:.0f} s" if p.returncode == 0 else tail(p))
        for stage in chain:
            c.check(f"stage {stage} finished", f"stage {stage}: done" in p.stdout + p.stderr)
            c.check(f"logs/{stage}.log", (run_dir / "logs" / f"{stage}.log").is_file())
        state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").is_file() else {}
        stages = state.get("stages", {})
        recorded = [k for k in chain if stages.get(k, {}).get("status") == "done"]
        # The stages that make the run's outputs record them; others (doctor, fetch, publish, ...) may have
        # nothing to record on the tiny model and only have to finish.
        unrecorded = [k for k in chain if k in PRODUCING and k not in recorded]
        c.check(
            "state.json: every producing stage done",
            bool(recorded) and not unrecorded,
            ", ".join(recorded) + (f"; not recorded: {', '.join(unrecorded)}" if unrecorded else ""),
        )
        manifest = run_dir / "clips" / "manifest.jsonl"
        n_clips = len(manifest.read_text().splitlines()) if manifest.is_file() else 0
        rejected = run_dir / "clips" / "rejected.jsonl"
        n_rej = len(rejected.read_text().splitlines()) if rejected.is_file() else -1
        c.check("prepare: 12 clips, 3 rejected", n_clips == 12 and n_rej == 3, f"{n_clips} clips, {n_rej} rejected")
        n_tok = len(list((run_dir / "tokens").rglob("*.npy")))
        c.check("extract: a token file per clip", n_tok == n_clips and n_tok > 0, f"{n_tok} token files")
        train = sorted((run_dir / "packed" / "train").glob("*.protos"))
        val = sorted((run_dir / "packed" / "val").glob("*.protos"))
        c.check(
            "pack: train and held-out val shards",
            bool(train) and bool(val) and all(f.stat().st_size > 0 for f in train + val),
            f"{len(train)} train, {len(val)} val",
        )
        if "synthesize" in chain:
            syn = stages.get("synthesize", {})
            out = str(syn.get("output") or "/runs/smoke/samples")  # the stage's default output folder
            host_out = work / "runs" / out[len("/runs/") :] if out.startswith("/runs/") else work / "missing"
            wavs = sorted(host_out.glob("*.wav"))
            c.check(
                "synthesize: wav files from the fine-tuned model",
                bool(wavs) and len(wavs) == syn.get("wavs") and all(w.stat().st_size > 44 for w in wavs),
                f"{len(wavs)} wavs in {out}, {syn.get('audio_seconds')} s of audio",
            )
        # 6. STAGE=serve on the run's model: started, one API request, stopped.
        serve_check(img, c, tiny, run_env)
        owner = {f.stat().st_uid for f in run_dir.rglob("*")}
        c.check("outputs written by the image's user", 0 not in owner, f"uids {sorted(owner)}")
    finally:
        img.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"smoke test took {time.time() - started:.0f} s")
    print(f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 and c.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
