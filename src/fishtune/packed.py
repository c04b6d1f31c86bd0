"""Packed training data: ``.protos`` files of length-prefixed ``text_data.TextData`` records.

Framing (Fish Speech's): ``<uint32 little-endian length><serialized TextData>``, repeated to the end of file.
A file that ends inside a record is reported as truncated, naming the file and the byte offset.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from fishtune.errors import InputError
from fishtune.proto import text_data_pb2 as pb
from fishtune.runstate import atomic_path

_LEN = struct.Struct("<I")


def make_sentence(text: str, codes: np.ndarray) -> pb.Sentence:
    return pb.Sentence(texts=[text], semantics=[pb.Semantics(values=row.tolist()) for row in codes])


def sentence_codes(sentence: pb.Sentence) -> np.ndarray:
    return np.asarray([list(s.values) for s in sentence.semantics], dtype=np.int64)


def frame(record: pb.TextData) -> bytes:
    body = record.SerializeToString()
    return _LEN.pack(len(body)) + body


def write(path: str | os.PathLike, records: Iterable[pb.TextData]) -> int:
    """Write records atomically; returns the byte size."""
    size = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for rec in records:
            data = frame(rec)
            fh.write(data)
            size += len(data)
    return size


def read(path: str | os.PathLike) -> Iterator[pb.TextData]:
    path = Path(path)
    with open(path, "rb") as fh:
        offset = 0
        while True:
            head = fh.read(_LEN.size)
            if not head:
                return
            if len(head) < _LEN.size:
                raise InputError(
                    f"{path} is truncated at byte {offset} (partial length prefix)",
                    hint="delete the packed/ folder and rerun the pack stage",
                )
            (n,) = _LEN.unpack(head)
            body = fh.read(n)
            if len(body) < n:
                raise InputError(
                    f"{path} is truncated at byte {offset} (record of {n} bytes, {len(body)} present)",
                    hint="delete the packed/ folder and rerun the pack stage",
                )
            rec = pb.TextData()
            try:
                rec.ParseFromString(body)
            except DecodeError as err:
                raise InputError(
                    f"{path}: record at byte {offset} is not a TextData ({err})",
                    hint="delete the packed/ folder and rerun the pack stage",
                ) from err
            yield rec
            offset += _LEN.size + n


def read_dir(folder: str | os.PathLike) -> list[pb.TextData]:
    return [rec for p in sorted(Path(folder).glob("*.protos")) for rec in read(p)]
