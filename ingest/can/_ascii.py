"""Numbers out of ASCII text, eight characters per 64-bit word (SWAR), with numpy.

Text logs are mostly fixed structure around short decimal and hex fields. Reading
each field as one little-endian ``uint64`` (its first character in the lowest
byte) turns digit validation and conversion into a few whole-array integer ops
per field instead of one op per character, which is what makes a numpy parser
of candump text run at memory speed. The techniques are the classic ones (Bit
Twiddling Hacks' byte-range test; the multiply-add digit folding simdjson uses),
restricted to ASCII input (every byte < 0x80), which callers guarantee.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Text", "decimal", "hex_bytes", "hex_nibbles", "in_range", "pack_hex", "same"]

_ONES = 0x0101010101010101
_HIGH = np.uint64(0x8080808080808080)
_ZEROS = 0x3030303030303030  # eight '0' characters

# _LOW_BYTES[k]: the k lowest bytes of a word (the field's first k characters).
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)
# _HIGH_BYTES[k]: the k highest bytes (a field's last k characters when the word ends at the field's end).
_HIGH_BYTES = np.array([((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(9)], dtype=np.uint64)


def _k(byte: int) -> np.uint64:
    return np.uint64(byte * _ONES)


def in_range(w: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """0x80 in each byte of ``w`` that lies in [lo, hi] (ASCII bytes only)."""
    return (w + _k(0x80 - lo)) & ~(w + _k(0x7F - hi)) & _HIGH


class Text:
    """ASCII text that can be read as a 64-bit word at any byte offset."""

    def __init__(self, data: bytes):
        padded = np.frombuffer(b"".join((bytes(8), data, bytes(16))), np.uint8)
        self.bytes = padded[8 : 8 + len(data)]
        # _words[j] is the word over data[j - 8 : j]: positions -8 .. len(data) + 8 read zeros.
        self._words = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))

    def starting_at(self, pos: np.ndarray, length: np.ndarray | int) -> np.ndarray:
        """The ``length`` (0-8) characters from ``pos``; the rest of the word is '0'.

        ``length`` is one number when all fields have the same length (cheaper).
        """
        return self._fill(self._words[pos + 8], _LOW_BYTES[length])

    def ending_at(self, end: np.ndarray, length: np.ndarray | int) -> np.ndarray:
        """The ``length`` (0-8) characters before ``end``, right-aligned; leading '0's."""
        return self._fill(self._words[end], _HIGH_BYTES[length])

    @staticmethod
    def _fill(words: np.ndarray, keep: np.ndarray | np.uint64) -> np.ndarray:
        if keep.ndim == 0 and keep == _LOW_BYTES[8]:
            return words
        return (words & keep) | (np.uint64(_ZEROS) & ~keep)


def same(lengths: np.ndarray) -> np.ndarray | int:
    """``lengths`` as one number when they are all equal (the usual, cheaper case)."""
    first = int(lengths[0])
    return first if (lengths == first).all() else lengths


def decimal(words: np.ndarray) -> tuple[np.ndarray, bool]:
    """Values of 8-digit decimal words (first digit lowest), and whether all are digits."""
    ok = bool((in_range(words, 0x30, 0x39) == _HIGH).all())
    x = words - np.uint64(_ZEROS)
    x = (x * np.uint64(10) + (x >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    x = (x * np.uint64(100) + (x >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    x = (x * np.uint64(10000) + (x >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    return x, ok


def hex_nibbles(words: np.ndarray) -> tuple[np.ndarray, bool]:
    """Each hex character's value in its own byte, and whether all were hex digits."""
    folded = words | _k(0x20)  # 'A'-'F' -> 'a'-'f'; digits keep their codes
    ok = bool(((in_range(words, 0x30, 0x39) | in_range(folded, 0x61, 0x66)) == _HIGH).all())
    letters = (words >> np.uint64(6)) & _k(0x01)  # 1 for letters, 0 for digits
    return (words & _k(0x0F)) + letters * np.uint64(9), ok


def pack_hex(nibbles: np.ndarray) -> np.ndarray:
    """Eight hex nibbles (first character lowest) as the 32-bit number they spell."""
    m = np.uint64
    x = ((nibbles & m(0x000F000F000F000F)) << m(4)) | ((nibbles >> m(8)) & m(0x000F000F000F000F))
    x = ((x & m(0x000000FF000000FF)) << m(8)) | ((x >> m(16)) & m(0x000000FF000000FF))
    return ((x & m(0xFFFF)) << m(16)) | ((x >> m(32)) & m(0xFFFF))


def hex_bytes(nibbles: np.ndarray) -> np.ndarray:
    """Eight hex nibbles (two per byte of payload, in text order) as four bytes, low 32 bits."""
    m = np.uint64
    x = ((nibbles & m(0x000F000F000F000F)) << m(4)) | ((nibbles >> m(8)) & m(0x000F000F000F000F))
    x = (x | (x >> m(8))) & m(0x0000FFFF0000FFFF)
    return (x | (x >> m(16))) & m(0xFFFFFFFF)
