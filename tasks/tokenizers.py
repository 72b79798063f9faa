"""Fixed token-id schemes: bytes (Text, Retrieval, Image-as-tokens) and the ListOps vocabulary.

Both schemes share the three specials, so a pad id of 0 holds everywhere:

    pad = 0, eos = 1, unk = 2

* Byte scheme (vocab 259): byte ``b`` (0..255) -> ``3 + b``. Text is UTF-8 encoded first, so a
  non-ASCII character becomes several ids. ``unk`` is never produced (every byte has an id).
  Image-as-tokens uses the same map for pixel values 0..255.
* ListOps scheme (vocab 18): digits ``0``..``9`` -> 3..12, ``[MIN`` 13, ``[MAX`` 14, ``[MED`` 15,
  ``[SM`` 16, ``]`` 17. Parentheses are dropped; any other token -> ``unk``. The vocabulary is
  fixed, never built from data.

Every encoded sequence ends with ``eos`` and is truncated so that it has at most ``max_length``
ids including the ``eos``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
NUM_SPECIALS = 3

BYTE_OFFSET = NUM_SPECIALS
BYTE_VOCAB_SIZE = NUM_SPECIALS + 256

LISTOPS_TOKENS: tuple[str, ...] = (
    *(str(d) for d in range(10)),
    "[MIN",
    "[MAX",
    "[MED",
    "[SM",
    "]",
)
LISTOPS_VOCAB: dict[str, int] = {tok: NUM_SPECIALS + i for i, tok in enumerate(LISTOPS_TOKENS)}
LISTOPS_VOCAB_SIZE = NUM_SPECIALS + len(LISTOPS_TOKENS)

_LISTOPS_LOOKUP = LISTOPS_VOCAB.__getitem__
_DROP_PARENS = str.maketrans({"(": " ", ")": " "})


def encode_bytes(data: bytes | str, max_length: int) -> np.ndarray:
    """Byte ids (``3 + b``) of ``data`` cut to ``max_length - 1`` bytes, then ``eos``; int16."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    body = np.frombuffer(data[: max_length - 1], dtype=np.uint8)
    out = np.empty(len(body) + 1, dtype=np.int16)
    out[:-1] = body
    out[:-1] += BYTE_OFFSET
    out[-1] = EOS_ID
    return out


def decode_bytes(ids: Iterable[int]) -> bytes:
    """Inverse of `encode_bytes` (specials are skipped)."""
    return bytes(int(i) - BYTE_OFFSET for i in ids if int(i) >= BYTE_OFFSET)


def listops_tokens(source: str) -> list[str]:
    """Whitespace tokens of a ListOps expression with the parentheses dropped."""
    return source.translate(_DROP_PARENS).split()


def encode_listops(source: str, max_length: int) -> np.ndarray:
    """ListOps ids of ``source`` cut to ``max_length - 1`` tokens, then ``eos``; int16."""
    tokens = listops_tokens(source)[: max_length - 1]
    out = np.empty(len(tokens) + 1, dtype=np.int16)
    out[-1] = EOS_ID
    try:  # fast path: every token known (map + fromiter stay in C)
        out[:-1] = np.fromiter(map(_LISTOPS_LOOKUP, tokens), dtype=np.int16, count=len(tokens))
    except KeyError:
        get = LISTOPS_VOCAB.get
        out[:-1] = [get(tok, UNK_ID) for tok in tokens]
    return out
