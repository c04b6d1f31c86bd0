"""The packed protobuf format: our schema round-trips, is wire-compatible, and truncation is detected."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fishtune import packed
from fishtune.errors import InputError
from fishtune.proto import text_data_pb2 as pb

PROTO_DIR = Path(__file__).resolve().parents[1] / "src" / "fishtune" / "proto"


def _records(n_speakers=2, n_clips=3, codebooks=10, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for s in range(n_speakers):
        sents = [
            packed.make_sentence(f"Lause {s}-{c} ääkkösillä", rng.integers(0, 4096, (codebooks, 5 + c)))
            for c in range(n_clips)
        ]
        out.append(pb.TextData(source="fishtune", name=f"spk{s}", sentences=sents))
    return out


def test_round_trip(tmp_path):
    recs = _records()
    size = packed.write(tmp_path / "00000000.protos", recs)
    assert size == (tmp_path / "00000000.protos").stat().st_size
    back = list(packed.read(tmp_path / "00000000.protos"))
    assert back == recs
    codes = packed.sentence_codes(back[1].sentences[2])
    assert codes.shape == (10, 7) and codes.dtype == np.int64
    assert back[0].sentences[0].texts == ["Lause 0-0 ääkkösillä"]


def test_framing_is_little_endian_uint32_length_prefix(tmp_path):
    rec = _records(1, 1)[0]
    data = packed.frame(rec)
    (n,) = struct.unpack("<I", data[:4])
    assert n == len(data) - 4 == rec.ByteSize()
    parsed = pb.TextData()
    parsed.ParseFromString(data[4:])
    assert parsed == rec


def test_wire_format_field_numbers():
    """Field numbers are the format: Sentence.semantics is field 3, TextData.sentences field 4."""
    fields = {f.name: f.number for f in pb.Sentence.DESCRIPTOR.fields}
    assert fields == {"texts": 1, "semantics": 3}
    assert {f.name: f.number for f in pb.TextData.DESCRIPTOR.fields} == {
        "source": 1,
        "name": 2,
        "sentences": 4,
    }
    assert pb.DESCRIPTOR.package == "text_data"
    # proto3 packs repeated uint32: tag (1 << 3 | 2) = 0x0a, then a length
    assert pb.Semantics(values=[1, 2, 300]).SerializeToString() == bytes([0x0A, 4, 1, 2, 0xAC, 0x02])


@pytest.mark.parametrize("cut", [2, 10, -3])
def test_truncated_file_is_detected(tmp_path, cut):
    path = tmp_path / "x.protos"
    packed.write(path, _records())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4 - _records()[1].ByteSize() + cut] if cut > 0 else data[:cut])
    with pytest.raises(InputError, match="truncated"):
        list(packed.read(path))


def test_generated_module_matches_the_proto(tmp_path):
    """text_data_pb2.py is what protoc makes of text_data.proto (regenerate with `make proto`)."""
    protoc = shutil.which("protoc")
    assert protoc, "protoc missing: make setup installs protobuf-compiler"
    shutil.copy(PROTO_DIR / "text_data.proto", tmp_path)
    subprocess.run([protoc, f"--proto_path={tmp_path}", f"--python_out={tmp_path}", "text_data.proto"], check=True)
    assert (tmp_path / "text_data_pb2.py").read_text() == (PROTO_DIR / "text_data_pb2.py").read_text()
