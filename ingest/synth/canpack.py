"""Many CAN payloads of one DBC message at once, byte for byte what cantools encodes.

The synthetic fleet writes ~30,000 frames per minute of driving; ``Message.encode``
costs ~13 us a frame in Python, which made CAN the larger half of synthesising a fleet.
This packs whole columns with numpy for the plain signals the synthetic DBC uses
(integer raw values, Intel or Motorola order, one multiplexer level), and checks
itself: a sample of rows of every call (the first, the last and a spread between) is
encoded by cantools too, and any difference raises. cantools stays the reference;
this is only its fast path for columns.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cantools.database.can import Message, Signal

__all__ = ["CHECKED_ROWS", "encode_columns"]

CHECKED_ROWS = 64  # rows of each call also encoded by cantools and compared


def _raw(signal: Signal, values: np.ndarray) -> np.ndarray:
    """cantools' ``round((value - offset) / scale)`` (half to even, as Python's round),
    as the two's-complement bits of the signal's length; a raw value that does not fit
    raises, as cantools' packer does."""
    conv = signal.conversion
    if conv.is_float or signal.is_float:
        raise ValueError(f"{signal.name}: float signals are not packed here")
    scaled = (np.asarray(values, dtype=np.float64) - conv.offset) / conv.scale
    raw = np.rint(scaled).astype(np.int64)
    lo, hi = (
        (-(1 << (signal.length - 1)), (1 << (signal.length - 1)) - 1)
        if signal.is_signed
        else (0, (1 << signal.length) - 1)
    )
    if raw.size and (raw.min() < lo or raw.max() > hi):
        raise OverflowError(f"{signal.name}: a raw value outside [{lo}, {hi}]")
    return raw.astype(np.uint64) & np.uint64((1 << signal.length) - 1)


def _place(signal: Signal, raw: np.ndarray, nbits: int) -> tuple[np.ndarray, bool]:
    """``raw`` shifted to its place in the payload read as one integer: little endian
    for Intel signals, big endian for Motorola ones (cantools' own bit numbering)."""
    if signal.byte_order == "little_endian":
        return raw << np.uint64(signal.start), False
    msb = 8 * (signal.start // 8) + (7 - signal.start % 8)  # from the first byte's top bit
    return raw << np.uint64(nbits - msb - signal.length), True


def _selected(message: Message, columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Per signal, the rows that carry it: all, or those whose multiplexer selects it."""
    rows: dict[str, np.ndarray] = {}
    mux = {s.name: s for s in message.signals if s.is_multiplexer}
    for s in message.signals:
        keep = np.ones(n, dtype=bool)
        if s.multiplexer_ids:
            if s.multiplexer_signal not in mux or mux[s.multiplexer_signal].multiplexer_ids:
                raise ValueError(f"{message.name}: nested multiplexing is not packed here")
            selector = np.asarray(columns[s.multiplexer_signal])
            keep = np.isin(selector, s.multiplexer_ids)
        rows[s.name] = keep
    return rows


def encode_columns(message: Message, columns: Mapping[str, np.ndarray]) -> list[bytes]:
    """One payload per row of ``columns`` (signal name -> values), what
    ``message.encode(row, strict=False)`` gives for each row."""
    n = len(next(iter(columns.values())))
    nbytes = message.length
    if nbytes > 8:
        raise ValueError(f"{message.name}: payloads over 8 bytes are not packed here")
    nbits = 8 * nbytes
    little = np.zeros(n, dtype=np.uint64)
    big = np.zeros(n, dtype=np.uint64)
    carries = _selected(message, columns, n)
    for s in message.signals:
        carried = carries[s.name]
        placed, is_big = _place(s, _raw(s, columns[s.name]), nbits)
        placed = np.where(carried, placed, np.uint64(0))
        if is_big:
            big |= placed
        else:
            little |= placed
    payload = little.astype("<u8").view(np.uint8).reshape(n, 8)[:, :nbytes]
    payload = payload | big.astype(">u8").view(np.uint8).reshape(n, 8)[:, 8 - nbytes :]
    flat = payload.tobytes()
    out = [flat[i * nbytes : (i + 1) * nbytes] for i in range(n)]
    _check(message, columns, out)
    return out


def _check(message: Message, columns: Mapping[str, np.ndarray], out: list[bytes]) -> None:
    n = len(out)
    for i in sorted({0, n - 1, *np.linspace(0, n - 1, CHECKED_ROWS).astype(int).tolist()}):
        if i < 0:
            continue
        row = {k: np.asarray(v)[i].item() for k, v in columns.items()}
        want = message.encode(row, strict=False)
        if want != out[i]:
            raise AssertionError(
                f"{message.name} row {i}: packed {out[i].hex()} but cantools encodes {want.hex()}"
            )
