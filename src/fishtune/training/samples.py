"""Training samples from packed data, in the layout Fish Speech's inference uses.

A sample packs consecutive utterances of one speaker, each as

    <|speaker:0|> text  <semantic tokens + codes>  <|im_end|>

after a leading ``<|interleave|>`` — exactly the prompt ``fish_speech...inference.generate_long`` builds from
reference clips, so the fine-tuned model is trained on the format it is used with. Loss is computed on the
semantic tokens and the ``<|im_end|>`` of every utterance. Encoding goes through Fish Speech's own
``ContentSequence``; tensors are ``[1 + num_codebooks, L]``: row 0 token ids, rows 1.. codes at semantic
positions (0 elsewhere). Labels are shifted by one; -100 is ignored.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from fishtune import packed
from fishtune.errors import InputError

IGNORE = -100
FILL_MARGIN = 64  # tokens
PACKINGS = ("fill", "pad")  # see PackedTrainStream


@dataclass
class Utterance:
    text: str
    codes: np.ndarray  # [num_codebooks, frames]


def load_groups(folder: str | Path, num_codebooks: int) -> list[list[Utterance]]:
    """One list of utterances per ``TextData`` record (speaker) in ``folder/*.protos``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.protos"))
    if not files:
        raise InputError(f"no .protos files in {folder}", hint="run the pack stage first (STAGE=pack)")
    groups = []
    for rec in packed.read_dir(folder):
        utts = []
        for s in rec.sentences:
            codes = packed.sentence_codes(s)
            if codes.shape[0] != num_codebooks:
                raise InputError(
                    f"{folder}: utterance of {rec.name} has {codes.shape[0]} codebooks, the model has {num_codebooks}",
                    hint="extract tokens with this model's codec (rerun extract and pack)",
                )
            utts.append(Utterance(s.texts[0], codes))
        if utts:
            groups.append(utts)
    return groups


class CachedTokenizer:
    """Fish Speech's tokenizer with a memo of ``encode``; everything else is passed through.

    The training stream encodes the same transcripts again and again, and each ``encode`` call goes through
    tiktoken's ``encode_batch``, which starts a thread pool: that was about 85% of the data loader's time.
    """

    MAX_ENTRIES = 200_000

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._memo: dict = {}

    def encode(self, s: str, allowed_special: bool | set[str] = True) -> list[int]:
        key = (s, allowed_special if isinstance(allowed_special, bool) else frozenset(allowed_special))
        ids = self._memo.get(key)
        if ids is None:
            if len(self._memo) >= self.MAX_ENTRIES:
                self._memo.clear()
            ids = self._memo[key] = tuple(self._tokenizer.encode(s, allowed_special=allowed_special))
        return list(ids)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not set up yet (e.g. while unpickling in a DataLoader worker)
            raise AttributeError(name)
        return getattr(self._tokenizer, name)


def encode(tokenizer, num_codebooks: int, utterances: list[Utterance]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (inputs ``[1+nc, L]``, labels ``[1+nc, L]``), int64."""
    from fish_speech.content_sequence import ContentSequence, TextPart, VQPart

    seq = ContentSequence(modality="interleave")
    for u in utterances:
        seq.append(
            [TextPart(text=u.text), VQPart(codes=torch.from_numpy(u.codes), cal_loss=True)], add_end=True, speaker=0
        )
    enc = seq.encode(tokenizer, add_shift=True)
    length = enc.tokens.shape[0]
    codes = torch.cat(enc.vq_parts, dim=1).long()
    inputs = torch.zeros(num_codebooks + 1, length, dtype=torch.long)
    inputs[0] = enc.tokens.long()
    inputs[1:, enc.vq_mask_tokens] = codes[:, : int(enc.vq_mask_tokens.sum())]
    labels = torch.full((num_codebooks + 1, length), IGNORE, dtype=torch.long)
    labels[0] = enc.labels.long()
    labels[1:, enc.vq_mask_labels] = codes[:, -int(enc.vq_mask_labels.sum()) :]
    return inputs, labels


def utterance_length(u: Utterance, text_tokens: int) -> int:
    return text_tokens + u.codes.shape[1] + 8  # speaker tag, im_end and a margin


class PackedTrainStream(IterableDataset):
    """Infinite, deterministic stream of collated batches for one rank of ``world`` (DDP).

    Global batch ``b`` is ``batch_size * world`` samples, ``b*batch_size*world + j``; rank ``r`` gets the slice
    ``j in [r*batch_size, (r+1)*batch_size)``, so ranks see disjoint samples and a step of W ranks x batch B
    trains on exactly the samples of one rank x batch W*B. Sample ``k`` depends only on (seed, k). Worker ``w``
    of ``n`` makes global batches ``b ≡ w (mod n)``, which the DataLoader returns in order, so batch order
    depends on neither the number of workers nor the rank.

    ``start_batch`` (a global batch: steps x accumulation) skips batches already consumed: a resumed run with the
    same world size sees the same data as an uninterrupted one.

    ``packing``: ``fill`` (default) adds utterances until the sample reaches ``max_length`` and cuts the last one, so
    rows are full, batches need no padding and attention runs the flash kernel without a mask; ``pad`` (fishtune's
    padding packing) stops before the utterance that would not fit, so no utterance is cut: batches are padded to
    their longest row and attention needs a mask. (Upstream Fish Speech cuts too: it concatenates a speaker's
    consecutive utterances and truncates at max_length, see bench/upstream.py.)
    A group with fewer tokens than ``max_length`` gives a shorter row either way.
    """

    def __init__(
        self,
        groups,
        tokenizer,
        num_codebooks: int,
        max_length: int,
        batch_size: int,
        collate,
        seed: int = 0,
        start_batch: int = 0,
        packing: str = "fill",
        rank: int = 0,
        world: int = 1,
    ):
        if packing not in PACKINGS:
            raise ValueError(f"packing must be fill or pad, not {packing!r}")
        self.fill = packing == "fill"
        self.groups, self.tokenizer, self.nc = groups, CachedTokenizer(tokenizer), num_codebooks
        self.max_length, self.seed, self.start_batch = max_length, seed, start_batch
        self.batch_size, self.collate = batch_size, collate
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        self.rank, self.world = rank, world
        self.weights = [len(g) for g in groups]

    def _len(self, u: Utterance) -> int:
        return utterance_length(u, len(self.tokenizer.encode(f"<|speaker:0|>{u.text}")))  # memoised

    def start(self, k: int) -> tuple[list[Utterance], int]:
        """Sample ``k``'s speaker (groups weighted by size) and first utterance: a function of (seed, k) only."""
        digest = hashlib.sha256(f"{self.seed}:{k}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "little"))
        group = rng.choices(self.groups, weights=self.weights)[0]
        return group, rng.randrange(len(group))

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        group, i = self.start(k)
        chosen, total = [], 1
        # filling aims past max_length by a margin, so the exact length rarely falls short (a second encode)
        goal = self.max_length + (FILL_MARGIN if self.fill else 0)
        while len(chosen) < len(group) and total < goal:
            u = group[(i + len(chosen)) % len(group)]
            n = self._len(u)
            if chosen and total + n > self.max_length and not self.fill:
                break
            chosen.append(u)
            total += n
        inputs, labels = encode(self.tokenizer, self.nc, chosen)
        while self.fill and inputs.shape[1] < self.max_length and len(chosen) < len(group):
            chosen.append(group[(i + len(chosen)) % len(group)])  # the length estimate was high: one more
            inputs, labels = encode(self.tokenizer, self.nc, chosen)
        return inputs[:, : self.max_length], labels[:, : self.max_length]

    def sample_ids(self, b: int) -> range:
        """The samples of global batch ``b`` that belong to this rank."""
        first = (b * self.world + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def batch(self, b: int) -> dict:
        return self.collate([self.sample(k) for k in self.sample_ids(b)])

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        b = self.start_batch + wid
        while True:
            yield self.batch(b)
            b += nw


class ValSet(Dataset):
    """Every held-out utterance once, alone, in a fixed order: comparable losses across validations.

    An utterance longer than ``max_length`` tokens is left out (``left_out``), never cut: cut inside its
    transcript it has no audio targets, and a loss averaged over such samples reads 0.0000."""

    def __init__(self, groups, tokenizer, num_codebooks: int, max_length: int):
        self.tokenizer, self.nc, self.max_length = CachedTokenizer(tokenizer), num_codebooks, max_length
        everything = [u for g in groups for u in g]
        fits = [encode(self.tokenizer, num_codebooks, [u])[0].shape[1] <= max_length for u in everything]
        self.items = [u for u, ok in zip(everything, fits, strict=True) if ok]
        self.left_out = [u for u, ok in zip(everything, fits, strict=True) if not ok]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return encode(self.tokenizer, self.nc, [self.items[i]])


class Collate:
    """Pad to the longest sample; ``key_padding_mask`` is True at padding."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch):
        longest = max(x.shape[1] for x, _ in batch)
        n = batch[0][0].shape[0]
        inputs = torch.zeros(len(batch), n, longest, dtype=torch.long)
        inputs[:, 0] = self.pad_id
        labels = torch.full((len(batch), n, longest), IGNORE, dtype=torch.long)
        pad = torch.ones(len(batch), longest, dtype=torch.bool)
        for i, (x, y) in enumerate(batch):
            inputs[i, :, : x.shape[1]] = x
            labels[i, :, : y.shape[1]] = y
            pad[i, : x.shape[1]] = False
        return {"inputs": inputs, "labels": labels, "key_padding_mask": pad}
