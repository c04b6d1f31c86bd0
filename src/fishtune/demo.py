"""The embedded default: a small Finnish dataset spoken by espeak-ng, plus the tiny model.

    python -m fishtune.demo DATA_DIR MODEL_DIR [--clips 12] [--no-broken]

The dataset is in Fish Speech's folder layout (``<speaker>/<clip>.wav`` + ``.lab``) with a few clips in other
formats (FLAC, stereo MP3) and, unless ``--no-broken``, three deliberately bad inputs that ``prepare`` must
reject: an undecodable wav, a wav without transcript and an empty transcript.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

from fishtune.errors import InputError

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write the demo dataset (espeak-ng Finnish) and the tiny model.")
    ap.add_argument("data_dir")
    ap.add_argument("model_dir")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--no-broken", action="store_true")
    args = ap.parse_args(argv)
    from fishtune.modeling.tiny import write_tiny_model

    data = Path(args.data_dir)
    if data.exists():
        shutil.rmtree(data)
    make_dataset(data, clips=args.clips, broken=not args.no_broken)
    if not (Path(args.model_dir) / "model.pth").is_file():
        write_tiny_model(args.model_dir)
    print(f"demo dataset: {data}\ntiny model:   {args.model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
