"""Golden ids for the two fixed token schemes (tasks/tokenizers.py)."""

from __future__ import annotations

import numpy as np

from tasks.tokenizers import (
    BYTE_VOCAB_SIZE,
    EOS_ID,
    LISTOPS_VOCAB,
    LISTOPS_VOCAB_SIZE,
    PAD_ID,
    UNK_ID,
    decode_bytes,
    encode_bytes,
    encode_listops,
)


def test_special_ids_are_fixed():
    assert (PAD_ID, EOS_ID, UNK_ID) == (0, 1, 2)
    assert BYTE_VOCAB_SIZE == 259
    assert LISTOPS_VOCAB_SIZE == 18


def test_listops_vocabulary_is_pinned():
    assert LISTOPS_VOCAB == {
        "0": 3, "1": 4, "2": 5, "3": 6, "4": 7, "5": 8, "6": 9, "7": 10, "8": 11, "9": 12,
        "[MIN": 13, "[MAX": 14, "[MED": 15, "[SM": 16, "]": 17,
    }  # fmt: skip


def test_listops_golden_ids_drop_parentheses_and_end_with_eos():
    ids = encode_listops("( ( ( [MAX 2 ) 9 ) ] )", max_length=100)
    assert ids.tolist() == [14, 5, 12, 17, 1]
    nested = encode_listops("( ( ( [SM 0 ) ( ( [MIN 7 ) 3 ] ) ) ] )", max_length=100)
    assert nested.tolist() == [16, 3, 13, 10, 6, 17, 17, 1]


def test_listops_unknown_token_maps_to_unk():
    assert encode_listops("[MAX 2 [FIRST ]", max_length=10).tolist() == [14, 5, 2, 17, 1]


def test_listops_truncates_to_max_length_including_eos():
    ids = encode_listops("[SM 1 2 3 4 5 ]", max_length=4)
    assert ids.tolist() == [16, 4, 5, 1]


def test_byte_golden_ids():
    assert encode_bytes("Hi!", 10).tolist() == [3 + 72, 3 + 105, 3 + 33, 1]
    # UTF-8: 'é' is two bytes, 0xC3 0xA9
    assert encode_bytes("é", 10).tolist() == [3 + 0xC3, 3 + 0xA9, 1]
    assert encode_bytes(b"\x00\xff", 10).tolist() == [3, 258, 1]
    assert encode_bytes("", 10).tolist() == [1]


def test_byte_truncation_and_round_trip():
    ids = encode_bytes("abcdef", max_length=4)
    assert ids.tolist() == [100, 101, 102, 1]
    assert ids.dtype == np.int16
    assert decode_bytes(encode_bytes("long text", 100)) == b"long text"
