"""The embedded default: a small Finnish dataset spoken by espeak-ng, plus the tiny model.

    python -m fishtune.demo DATA_DIR MODEL_DIR [--clips 12] [--no-broken]   # write the inputs only
    python -m fishtune.demo --run [--out runs/demo] [--inputs build/demo] [--stage all]   # make demo

``--run`` writes the inputs to ``--inputs`` (``data/``, ``model/``, ``cache/``) when they are missing, then runs
the stages with ``model=tiny preset=tiny`` so that the run directory is ``--out`` itself: ``FISHTUNE_RUNS`` is its
parent and ``RUN_NAME`` its name (``runs/demo/clips``, not ``runs/demo/runs/demo/clips``). The inputs live outside
the run directory because ``merge`` writes the run's own ``model/``.

The dataset is in Fish Speech's folder layout (``<speaker>/<clip>.wav`` + ``.lab``) with a few clips in other
formats (FLAC, stereo MP3) and, unless ``--no-broken``, three deliberately bad inputs that ``prepare`` must
reject: an undecodable wav, a wav without transcript and an empty transcript.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fishtune.errors import FishtuneError, InputError

SENTENCES = [
    "Hyvää huomenta, tänään on kaunis päivä.",
    "Suomen kieli on kaunis ja rikas kieli.",
    "Kokous alkaa klo 14.30 ja kestää n. 2 tuntia.",
    "Junalippu maksoi 25 euroa ja matka kesti 3 tuntia.",
    "Syntymäpäiväni on 6.12. ja juhlat pidetään kotona.",
    "Järvellä ui kaksi joutsenta ja yksi sorsa.",
    "Esim. mustikat ja puolukat kasvavat metsässä.",
    "Lämpötila laski yöllä 15 °C pakkasen puolelle.",
    "Kirjastossa on yli 10 000 kirjaa ja lehteä.",
    "Helsinki on Suomen pääkaupunki ja suurin kaupunki.",
    "Sauna lämpenee hitaasti, mutta löyly on hyvä.",
    "Talvella aurinko paistaa vain muutaman tunnin päivässä.",
    "Mökillä kuunneltiin sateen ropinaa katolla koko ilta.",
    "Hän luki kirjan loppuun yhdessä illassa.",
    "Vuonna 2024 sataa enemmän kuin vuonna 1999.",
    "Pöydällä on 3 omenaa, 2 päärynää ja 1 banaani.",
]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise InputError(f"{tool} is not installed", hint="run make setup (installs espeak-ng and ffmpeg)")
    return path


def speak(text: str, out_wav: Path, speed: int = 150, pitch: int = 50) -> None:
    subprocess.run(
        [_need("espeak-ng"), "-v", "fi", "-s", str(speed), "-p", str(pitch), "-w", str(out_wav), text],
        check=True,
        capture_output=True,
    )


def make_dataset(root: str | Path, clips: int = 12, broken: bool = True, speaker: str = "puhuja") -> Path:
    """Write the espeak-ng Finnish dataset; returns the dataset folder (``root``)."""
    root = Path(root)
    spk = root / speaker
    spk.mkdir(parents=True, exist_ok=True)
    ffmpeg = _need("ffmpeg")
    for i in range(clips):
        text = SENTENCES[i % len(SENTENCES)]
        stem = spk / f"lause_{i:03d}"
        wav = stem.with_suffix(".wav")
        speak(text, wav, speed=140 + 7 * (i % 5), pitch=45 + (i % 4) * 3)
        if i % 6 == 4:  # some clips as stereo MP3 at 48 kHz, to exercise decoding, downmix and resampling
            subprocess.run(
                [
                    ffmpeg,
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    str(wav),
                    "-ac",
                    "2",
                    "-ar",
                    "48000",
                    str(stem.with_suffix(".mp3")),
                ],
                check=True,
            )
            wav.unlink()
        elif i % 6 == 5:  # and some as FLAC
            subprocess.run(
                [ffmpeg, "-loglevel", "error", "-y", "-i", str(wav), str(stem.with_suffix(".flac"))],
                check=True,
            )
            wav.unlink()
        stem.with_suffix(".lab").write_text(text + "\n", encoding="utf-8")
    if broken:
        (spk / "rikki.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 4)
        (spk / "rikki.lab").write_text("Tämä tiedosto on rikki.\n", encoding="utf-8")
        speak("Tältä puuttuu teksti.", spk / "ilman_tekstia.wav")
        speak("Tyhjä teksti.", spk / "tyhja_teksti.wav")
        (spk / "tyhja_teksti.lab").write_text("  \n", encoding="utf-8")
    return root


def write_inputs(data_dir: str | Path, model_dir: str | Path, clips: int = 12, broken: bool = True) -> None:
    """The demo's dataset (replaced) and the tiny model (kept when it is there)."""
    from fishtune.modeling.tiny import write_tiny_model

    data = Path(data_dir)
    if data.exists():
        shutil.rmtree(data)
    make_dataset(data, clips=clips, broken=broken)
    if not (Path(model_dir) / "model.pth").is_file():
        write_tiny_model(model_dir)


def demo_env(out: str | Path, inputs: str | Path) -> dict[str, str]:
    """The environment that makes ``out`` the run directory and reads the inputs from ``inputs``."""
    out, inputs = Path(out), Path(inputs)
    return {
        "FISHTUNE_DATA": str(inputs / "data"),
        "FISHTUNE_MODEL": str(inputs / "model"),
        "FISHTUNE_CACHE": str(inputs / "cache"),
        "FISHTUNE_RUNS": str(out.parent),
        "RUN_NAME": out.name,
    }


def run_demo(out: str | Path = "runs/demo", inputs: str | Path = "build/demo", stage: str = "all") -> int:
    """Write the inputs when missing, then run ``stage`` with the tiny model; the outputs land in ``out``."""
    out, inputs = Path(out), Path(inputs)
    if (out / "runs").is_dir() or (out / "data").is_dir():
        raise InputError(
            f"{out} holds an older demo (its inputs and runs/ inside the run directory)",
            hint=f"remove it (rm -rf {out}) and run make demo again",
        )
    if not (inputs / "model" / "model.pth").is_file() or not (inputs / "data").is_dir():
        write_inputs(inputs / "data", inputs / "model")
    os.environ.update(demo_env(out, inputs))
    os.environ.pop("STAGE", None)
    from fishtune.cli import main as cli_main

    code = cli_main([stage, "model=tiny", "preset=tiny"])
    if code == 0:
        print(f"demo run finished: see {out}/ (clips/, tokens/, packed/, train/, model/, samples/, report/, logs/)")
    return code


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the demo dataset (espeak-ng Finnish) and the tiny model.")
    ap.add_argument("data_dir", nargs="?")
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--no-broken", action="store_true")
    ap.add_argument("--run", action="store_true", help="write the inputs when missing, then run the pipeline")
    ap.add_argument("--out", default="runs/demo", help="--run: the run directory (default runs/demo)")
    ap.add_argument("--inputs", default="build/demo", help="--run: dataset, tiny model and cache (build/demo)")
    ap.add_argument("--stage", default="all", help="--run: the stages (default all)")
    args = ap.parse_args(argv)
    if args.run:
        if args.data_dir or args.model_dir:
            ap.error("--run takes --out and --inputs, not DATA_DIR MODEL_DIR")
        try:
            return run_demo(args.out, args.inputs, args.stage)
        except FishtuneError as err:  # before the CLI runs: one line, as the CLI prints its own
            print(f"error: {err.one_line()}", file=sys.stderr)
            return err.exit_code
    if not (args.data_dir and args.model_dir):
        ap.error("DATA_DIR and MODEL_DIR are required (or --run)")
    write_inputs(args.data_dir, args.model_dir, clips=args.clips, broken=not args.no_broken)
    print(f"demo dataset: {args.data_dir}\ntiny model:   {args.model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
