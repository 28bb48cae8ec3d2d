"""Interleaved rANS in numpy: the entropy coder of the learned entropy bottleneck.

    symbols (N,) with per-symbol (frequency, cumulative) out of 2**12
        ─► L lanes, symbol i on lane i % L, step i // L
        ─► encode steps in reverse, all lanes at once ─► bytes
    stream = final lane states (20 bits each, packed) ║ renormalisation bytes

Byte-wise rANS (Duda 2013; the layout of Giesen's ``rans_byte``) with the smallest state
that a 12-bit table allows: each lane's state lives in [2**12, 2**20), so a lane costs 20
bits to flush and about 12 bits of overhead in all. A Python loop that steps every lane at
once is what makes numpy fast enough; the number of lanes is a fixed function of the symbol
count (``lanes_for``), chosen so a payload needs at most about ``STEPS`` loop iterations.

The coder is deterministic integer arithmetic: the same symbols and tables give the same
bytes on any machine, and decoding checks everything it reads. A stream that is truncated,
has bytes left over, or does not end every lane in its initial state raises
:class:`RansError`; decoding never reads past the stream and never loops more than the
declared symbol count allows.
"""

from __future__ import annotations

import numpy as np

PRECISION = 12
TOTAL = 1 << PRECISION
STATE_LOW = TOTAL  # lane states live in [STATE_LOW, STATE_LOW << 8)
STATE_BITS = PRECISION + 8
STEPS = 192  # loop iterations a payload aims at; more symbols get more lanes
MAX_LANES = 32


class RansError(ValueError):
    """A stream that cannot be what the encoder wrote for these tables."""


def lanes_for(count: int) -> int:
    """How many lanes ``count`` symbols are coded on (the decoder derives it the same way)."""
    return int(min(MAX_LANES, max(1, -(-count // STEPS))))


def state_bytes(lanes: int) -> int:
    return -(-lanes * STATE_BITS // 8)


def _pack_states(states: np.ndarray) -> bytes:
    bits = ((states[:, None] >> np.arange(STATE_BITS - 1, -1, -1, dtype=np.uint32)) & 1)
    return np.packbits(bits.astype(np.uint8).reshape(-1)).tobytes()


def _unpack_states(data: np.ndarray, lanes: int) -> np.ndarray:
    bits = np.unpackbits(data)[:lanes * STATE_BITS].reshape(lanes, STATE_BITS)
    weights = (1 << np.arange(STATE_BITS - 1, -1, -1, dtype=np.int64))
    return (bits.astype(np.int64) @ weights).astype(np.int64)


def _lay_out(values: np.ndarray, lanes: int, pad: int) -> np.ndarray:
    """(N,) ─► (steps, lanes), padded with ``pad``."""
    steps = -(-len(values) // lanes)
    out = np.full(steps * lanes, pad, dtype=np.int64)
    out[:len(values)] = values
    return out.reshape(steps, lanes)


def encode(freq: np.ndarray, cum: np.ndarray) -> bytes:
    """Code N symbols given each one's frequency and cumulative frequency (N,) out of 2**12.

    A symbol of frequency 2**12 costs nothing and may be passed (it is a no-op)."""
    freq = np.asarray(freq, dtype=np.int64)
    cum = np.asarray(cum, dtype=np.int64)
    if freq.shape != cum.shape or freq.ndim != 1:
        raise ValueError("freq and cum must be 1-D arrays of the same length")
    if len(freq) and (freq.min() < 1 or int((cum + freq).max()) > TOTAL or cum.min() < 0):
        raise ValueError("frequencies must be in 1..2**12 and fit the table")
    lanes = lanes_for(len(freq))
    f_steps = _lay_out(freq, lanes, TOTAL)
    c_steps = _lay_out(cum, lanes, 0)
    once = f_steps << 8  # a state at or above this sheds a byte before coding...
    twice = f_steps << 16  # ...and at or above this, two
    before = np.empty_like(f_steps)  # each step's state before it sheds bytes
    x = np.full(lanes, STATE_LOW, dtype=np.int64)
    for t in range(len(f_steps) - 1, -1, -1):
        before[t] = x
        x = x >> (((x >= once[t]).astype(np.int64) + (x >= twice[t])) << 3)
        quotient, remainder = np.divmod(x, f_steps[t])
        x = (quotient << PRECISION) + remainder + c_steps[t]
    return _pack_states(x.astype(np.uint32)) + _shed_bytes(before, once, twice).tobytes()


def _shed_bytes(before: np.ndarray, once: np.ndarray, twice: np.ndarray) -> np.ndarray:
    """The bytes every step shed, in the order the decoder reads them.

    The decoder runs the steps forwards. At each step its first pass reads one byte for
    every lane that shed any (the one shed last), lanes in ascending order; its second pass
    one more for every lane that shed two (the one shed first)."""
    shed_one = before >= once
    shed_two = before >= twice
    low = (before & 0xFF).astype(np.uint8)
    high = ((before >> 8) & 0xFF).astype(np.uint8)
    values = np.stack([np.where(shed_two, high, low), low], axis=1)  # (steps, pass, lanes)
    mask = np.stack([shed_one, shed_two], axis=1)
    return values[mask]


def decode(data: bytes, count: int, tables: np.ndarray, freq_rows: np.ndarray,
           cum_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Decode ``count`` symbols: symbol i is coded with table row ``rows[i]``.

    ``tables`` (rows, 2**12) maps a slot to the symbol index whose interval holds it;
    ``freq_rows`` / ``cum_rows`` (rows, S) give each index's frequency and cumulative
    frequency. The last row must be the no-op row (index 0 of frequency 2**12), which pads
    the last step. Returns the symbol indices (count,). Raises RansError on a bad stream."""
    lanes = lanes_for(count)
    raw = np.frombuffer(data, dtype=np.uint8)
    head = state_bytes(lanes)
    if len(raw) < head:
        raise RansError(f"stream of {len(raw)} bytes cannot hold {lanes} lane states")
    x = _unpack_states(raw[:head], lanes)
    if x.min() < STATE_LOW:
        raise RansError("stream starts with a lane state below the coder's range")
    body = raw[head:].astype(np.int64)
    position = 0
    row_steps = _lay_out(np.asarray(rows, dtype=np.int64), lanes, len(tables) - 1)
    out = np.empty_like(row_steps)
    for t in range(len(row_steps)):
        r = row_steps[t]
        slot = x & (TOTAL - 1)
        index = tables[r, slot]
        x = freq_rows[r, index] * (x >> PRECISION) + slot - cum_rows[r, index]
        out[t] = index
        for _ in range(2):  # a state sheds at most two bytes per symbol: read them back
            need = x < STATE_LOW
            k = int(np.count_nonzero(need))
            if not k:
                break
            if position + k > len(body):
                raise RansError("stream ends before its last symbol")
            x[need] = (x[need] << 8) | body[position:position + k]
            position += k
    if position != len(body):
        raise RansError(f"stream has {len(body) - position} bytes after its last symbol")
    if not np.all(x == STATE_LOW):
        raise RansError("stream does not decode to the coder's initial state (corrupt)")
    return out.reshape(-1)[:count]
