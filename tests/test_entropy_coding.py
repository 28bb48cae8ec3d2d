"""The entropy bottleneck's coder: rANS round trips, a pinned stream, refusal of bad streams,
and the payload format with a model's own tables."""

import numpy as np
import pytest
import torch

from splitnet import codec, rans
from splitnet.codec import PayloadError
from splitnet.config import Config, ConfigError
from splitnet.model import create_model
from splitnet.model.entropy_bottleneck import (
    TABLE_PRECISION,
    EntropyCode,
    quantize_frequencies,
)


def _tables(rng: np.random.Generator, rows: int = 12, width: int = 9):
    """Random frequency tables (one no-op row last) and the decoder's lookups."""
    freq = np.zeros((rows + 1, width), np.int64)
    for r in range(rows):
        k = int(rng.integers(1, width + 1))
        freq[r, :k] = quantize_frequencies(rng.dirichlet(np.full(k, 0.3)))
    freq[rows, 0] = rans.TOTAL
    cum = np.zeros((rows + 1, width + 1), np.int64)
    cum[:, 1:] = np.cumsum(freq, axis=1)
    lookup = np.stack([np.searchsorted(row[1:], np.arange(rans.TOTAL), side="right")
                       for row in cum])
    return freq, cum, lookup


def _draw(rng, freq, rows):
    return np.array([rng.choice(freq.shape[1], p=freq[r] / rans.TOTAL) for r in rows],
                    dtype=np.int64)


@pytest.mark.parametrize("count", [0, 1, 7, 191, 192, 193, 1000, 6272, 7000])
def test_rans_round_trip_is_exact_and_near_the_entropy(count):
    rng = np.random.default_rng(count)
    freq, cum, lookup = _tables(rng)
    rows = rng.integers(0, len(freq) - 1, count)
    index = _draw(rng, freq, rows)
    stream = rans.encode(freq[rows, index], cum[rows, index])
    assert np.array_equal(rans.decode(stream, count, lookup, freq, cum, rows), index)
    entropy_bytes = -np.log2(freq[rows, index] / rans.TOTAL).sum() / 8
    lanes = rans.lanes_for(count)
    # each lane costs its 20-bit flushed state and at most a few bytes of rounding
    assert len(stream) <= entropy_bytes + lanes * 4 + 3
    assert rans.encode(freq[rows, index], cum[rows, index]) == stream  # deterministic


def test_rans_streams_are_pinned():
    """The stream format is shared by devices and edges of other versions and CPUs; these
    streams are worked out by hand from the format, not recorded from the code."""
    # one symbol (frequency 1024, cumulative 2048) from the initial state 4096: nothing is
    # shed (4096 < 1024 << 8); x = (4096 // 1024) << 12 + 4096 % 1024 + 2048 = 0x04800,
    # flushed as 20 bits, most significant first: 04 80 0|0
    assert rans.encode(np.array([1024]), np.array([2048])) == bytes([0x04, 0x80, 0x00])
    # two symbols of frequency 1 (cumulative 7, then 100), coded last to first:
    #   100: 4096 >= 1 << 8 sheds 0x00, x = 16  -> 16 << 12 + 100 = 65636
    #     7: 65636 >= 1 << 16 sheds 0x64, then 0x00, x = 1 -> 4096 + 7 = 0x01007
    # the decoder reads the bytes shed last first: 00 64 (second symbol's pass), then 00
    stream = rans.encode(np.array([1, 1]), np.array([7, 100]))
    assert stream == bytes([0x01, 0x00, 0x70, 0x00, 0x64, 0x00])
    freq = np.zeros((2, 4097), np.int64)
    freq[0, :] = 1
    freq[0, 0] = 0
    freq[1, 0] = rans.TOTAL
    cum = np.zeros((2, 4098), np.int64)
    cum[:, 1:] = np.cumsum(freq, axis=1)
    lookup = np.stack([np.searchsorted(row[1:], np.arange(rans.TOTAL), side="right")
                       for row in cum])
    assert rans.decode(stream, 2, lookup, freq, cum, np.array([0, 0])).tolist() == [8, 101]


@pytest.mark.parametrize("seed", range(3))
def test_rans_refuses_truncated_extended_and_corrupted_streams(seed):
    rng = np.random.default_rng(seed)
    freq, cum, lookup = _tables(rng)
    rows = rng.integers(0, len(freq) - 1, 2000)
    index = _draw(rng, freq, rows)
    stream = rans.encode(freq[rows, index], cum[rows, index])
    with pytest.raises(rans.RansError):
        rans.decode(stream[:-1], len(rows), lookup, freq, cum, rows)
    with pytest.raises(rans.RansError):
        rans.decode(stream + b"\0", len(rows), lookup, freq, cum, rows)
    with pytest.raises(rans.RansError):
        rans.decode(stream[:2], len(rows), lookup, freq, cum, rows)
    refused = 0
    for _ in range(50):
        bad = bytearray(stream)
        bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
        try:
            out = rans.decode(bytes(bad), len(rows), lookup, freq, cum, rows)
        except rans.RansError:
            refused += 1
        else:
            assert len(out) == len(rows)
    assert refused >= 45  # a flipped bit leaves the lanes in their initial state by chance


def test_frequencies_sum_to_the_precision_and_never_drop_a_symbol():
    rng = np.random.default_rng(0)
    for k in (1, 2, 5, 100, 513):
        mass = rng.dirichlet(np.full(k, 0.05))
        mass[0] = 0.0  # a symbol with no mass still gets a frequency
        freq = quantize_frequencies(mass)
        assert freq.sum() == 1 << TABLE_PRECISION and freq.min() >= 1


@pytest.fixture(scope="module")
def fresh_model():
    torch.manual_seed(0)
    return create_model("resnet18_imagenette").eval()


def test_entropy_payload_round_trip_and_forward_tail(fresh_model):
    model = fresh_model
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        for rate in (0, model.entropy_bottleneck.rates - 1):
            config = Config(split=1, rate=rate)
            head = model.forward_head(x, config)
            assert isinstance(head.code, EntropyCode)
            payloads = codec.encode_batch(head.code)
            shape = model.code_shape(config)
            back = EntropyCode.cat([codec.decode_entropy(p, model.coding_tables, rate, shape)
                                    for p in payloads])
            assert torch.equal(back.symbols, head.code.symbols)
            torch.testing.assert_close(model.forward_tail(back, config), model(x, config))


def test_entropy_payload_header_is_checked_before_decoding(fresh_model):
    model = fresh_model
    config = Config(split=1, rate=2)
    with torch.no_grad():
        payload = codec.encode(model.forward_head(torch.randn(1, 3, 224, 224), config).code)
    shape, tables = model.code_shape(config), model.coding_tables
    assert payload[:5] == bytes([0xB1, 2, *shape])
    for bad, message in ((payload[:1], "too short"), (b"\xa1" + payload[1:], "not the entropy"),
                         (payload[:1] + b"\x03" + payload[2:], "rate 3"),
                         (payload[:2] + b"\x11" + payload[3:], "shape"),
                         (payload[:-1], "rANS"), (payload + b"\x00", "rANS")):
        with pytest.raises(PayloadError, match=message):
            codec.decode_entropy(bad, tables, 2, shape)
    with pytest.raises(PayloadError, match="must be bytes"):
        codec.decode_entropy("text", tables, 2, shape)  # type: ignore[arg-type]


def test_entropy_configs_parse_and_are_checked(fresh_model):
    config = Config.parse("split1/rate3/int8")
    assert config == Config(split=1, rate=3, int8=True) and str(config) == "split1/rate3/int8"
    assert config.entropy_coded and not config.raw
    for text in ("split2/rate0", "split1/rate99"):
        with pytest.raises(ConfigError):
            fresh_model.check(Config.parse(text))
    with pytest.raises(ConfigError):
        Config(split=1, rate=0, width=4)
    rates = [c for c in fresh_model.split_configs() if c.entropy_coded]
    assert [c.rate for c in rates] == list(range(fresh_model.entropy_bottleneck.rates))
