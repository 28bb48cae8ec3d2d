"""The wire format: round trips, golden bytes, and refusal of every kind of bad payload."""

import io
import random

import numpy as np
import pytest
import torch

from splitnet import codec
from splitnet.codec import PayloadError
from splitnet.quantize import QuantizedTensor, quantize_min_max, quantize_unit_range


def _code(bits: int, shape=(4, 4, 4), seed=0) -> QuantizedTensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (1, *shape), generator=g, dtype=torch.uint8)
    scale = torch.tensor([1.0 / (2 ** bits - 1)]).half().float()  # as the quantizers make it
    return QuantizedTensor(codes, scale, torch.tensor([0.0]), bits)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("shape", [(1, 4, 4), (8, 4, 4), (3, 7, 7), (32, 14, 14)])
def test_round_trip_is_exact(bits, shape):
    code = _code(bits, shape)
    back = codec.decode(codec.encode(code), shape, bits)
    assert torch.equal(back.codes, code.codes)
    torch.testing.assert_close(back.dequantize(), code.dequantize())


def test_codes_pack_most_significant_bit_first_with_zero_padding():
    assert codec.pack_codes(np.array([3, 0, 1], np.uint8), 2) == bytes([0b11_00_01_00])
    assert codec.pack_codes(np.array([9, 4, 15], np.uint8), 4) == bytes([0x94, 0xF0])
    packed = bytes([0b11_00_01_10, 0x94])
    assert codec.unpack_codes(packed, 2, 5).tolist() == [3, 0, 1, 2, 2]
    assert codec.unpack_codes(packed, 4, 3).tolist() == [12, 6, 9]
    rng = np.random.default_rng(0)
    for bits in (2, 4, 8):
        codes = rng.integers(0, 2 ** bits, 1001).astype(np.uint8)
        reference = np.packbits(np.unpackbits(codes[:, None], axis=1)[:, 8 - bits:])
        assert codec.pack_codes(codes, bits) == reference.tobytes()


def test_real_activations_round_trip_within_half_a_quantization_step():
    x = torch.randn(2, 16, 7, 7) * 3
    for source, q in ((x, quantize_min_max(x, 8)),
                      (torch.sigmoid(x), quantize_unit_range(torch.sigmoid(x), 2))):
        back = codec.decode_batch(codec.encode_batch(q), (16, 7, 7), q.bits)
        torch.testing.assert_close(back.dequantize(), q.dequantize())
        step = float(q.scale.max())
        assert float((back.dequantize() - source).abs().max()) <= step / 2 + 1e-2 * step + 2e-3


def test_golden_bytes_of_a_stored_payload():
    codes = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4) % 4
    code = QuantizedTensor(codes, torch.tensor([1 / 3]), torch.tensor([0.0]), 2)
    payload = codec.encode(code)
    expected = "".join([
        "a1",  # format tag + version 1
        "62",  # 2 bits, stored (no zstd), 3 dimensions
        "010404",  # C=1, H=4, W=4
        "5535",  # scale 1/3 as float16, little-endian
        "0000",  # zero point 0.0
        "1b1b1b1b",  # codes 0,1,2,3 repeated, 2 bits each, most significant first
    ])
    assert payload.hex() == expected
    assert codec.decode(bytes.fromhex(expected), (1, 4, 4), 2).codes.equal(codes)


# Written once by this codec through its zstd path. Decoding it must never change, whatever
# zstd version compresses today (compressed bytes may differ between zstd releases).
GOLDEN_ZSTD = "a178080707003800bc0000850000480001020304050600ff01007c2ae002"


def test_golden_zstd_payload_decodes_to_the_same_tensor():
    payload = bytes.fromhex(GOLDEN_ZSTD)
    assert payload[1] & 0x10  # zstd flag: 392 mostly-zero bytes shrank to 22
    back = codec.decode(payload, (8, 7, 7), 8)
    expected = torch.zeros(1, 8, 7, 7, dtype=torch.uint8)
    expected[0, 0, 0, :] = torch.arange(7)
    expected[0, 7, 6, 6] = 255
    assert torch.equal(back.codes, expected)
    assert float(back.scale[0]) == 0.5 and float(back.zero_point[0]) == -1.0
    assert codec.decode(codec.encode(back), (8, 7, 7), 8).codes.equal(expected)


def test_every_truncation_is_refused():
    payload = codec.encode(_code(4, (8, 4, 4)))
    for cut in range(len(payload)):
        with pytest.raises(PayloadError):
            codec.decode(payload[:cut], (8, 4, 4), 4)


def test_random_corruption_raises_payload_error_or_decodes_within_bounds():
    rng = random.Random(0)
    payloads = [codec.encode(_code(b, s)) for b in (2, 4, 8) for s in ((8, 4, 4), (16, 7, 7))]
    payloads.append(codec.encode(QuantizedTensor(torch.zeros(1, 8, 7, 7, dtype=torch.uint8),
                                                 torch.tensor([1.0]), torch.tensor([0.0]), 8)))
    for _ in range(3000):
        data = bytearray(rng.choice(payloads))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            out = codec.decode(bytes(data))
        except PayloadError:
            continue
        assert out.codes.numel() <= codec.MAX_ELEMENTS


def test_garbage_and_wrong_types_are_refused():
    rng = random.Random(1)
    for _ in range(500):
        with pytest.raises(PayloadError):
            codec.decode(bytes([0xA1]) + rng.randbytes(rng.randint(0, 3)))
    with pytest.raises(PayloadError):
        codec.decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="format version"):
        codec.decode(b"\xa2" + codec.encode(_code(2))[1:])


def test_oversized_payloads_are_refused_before_any_work():
    with pytest.raises(PayloadError, match="exceeds"):
        codec.decode(b"\xa1" + bytes(codec.MAX_PAYLOAD_BYTES))
    # a header that declares a huge tensor is refused without allocating it
    huge = bytes([0xA1, 0x08 | (3 << 5)]) + codec._varint(60000) * 3 + bytes(8)
    with pytest.raises(PayloadError, match="elements"):
        codec.decode(huge)


def test_mismatched_shape_or_bits_is_refused():
    payload = codec.encode(_code(4, (4, 4, 4)))
    with pytest.raises(PayloadError, match="shape"):
        codec.decode(payload, (8, 4, 4), 4)
    with pytest.raises(PayloadError, match="bits"):
        codec.decode(payload, (4, 4, 4), 2)


# ------------------------------------------------------------------- input images
def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("shape", [(28, 28), (224, 224, 3)])
def test_input_images_round_trip(shape):
    from splitnet.input_codecs import decode_image, encode_image

    image = _image(shape)
    np.testing.assert_array_equal(decode_image(encode_image(image, "png"), "png", shape), image)
    smooth = np.broadcast_to(np.linspace(0, 255, shape[1]).astype(np.uint8)[:, None]
                             if len(shape) == 2 else
                             np.linspace(0, 255, shape[1]).astype(np.uint8)[:, None, None],
                             shape).copy()  # JPEG is for photographs, not noise
    jpeg = decode_image(encode_image(smooth, "jpeg95"), "jpeg95", shape)
    assert jpeg.shape == shape and np.abs(jpeg.astype(int) - smooth).mean() < 3
    if len(shape) == 2:
        np.testing.assert_array_equal(
            decode_image(encode_image(image, "raw-zstd"), "raw-zstd", shape), image)


def test_an_image_of_the_wrong_size_is_refused_from_its_header():
    """A small file that declares a large image (a decompression bomb, or just the wrong
    camera setting) is refused by what its header says, whatever it declares."""
    from PIL import Image

    from splitnet.input_codecs import MAX_SIDE, decode_image, encode_image

    big = encode_image(np.zeros((MAX_SIDE, MAX_SIDE), dtype=np.uint8), "png")
    assert len(big) < 5000  # a few kB that would inflate to a megapixel
    with pytest.raises(PayloadError, match="1024x1024; this model takes 28x28"):
        decode_image(big, "png", (28, 28))
    colour = encode_image(_image((28, 28, 3)), "png")
    with pytest.raises(PayloadError, match="28x28x3; this model takes 28x28"):
        decode_image(colour, "png", (28, 28))
    huge = io.BytesIO()  # declares 40,000 x 40,000: beyond Pillow's bomb limit
    Image.new("L", (1, 1)).save(huge, format="PNG")
    header = bytearray(huge.getvalue())
    header[16:24] = (40_000).to_bytes(4, "big") * 2  # IHDR width, height (CRC now wrong)
    with pytest.raises(PayloadError):
        decode_image(bytes(header), "png", (28, 28))
    with pytest.raises(PayloadError, match="expected|corrupt"):
        decode_image(encode_image(_image((28, 28)), "jpeg90"), "png", (28, 28))
    with pytest.raises(PayloadError, match="out of range"):
        decode_image(b"\x00\x00\x10\x00" + b"junk", "raw-zstd", (28, 28))
    with pytest.raises(PayloadError, match="16x16; this model takes 28x28"):
        decode_image(b"\x10\x00\x10\x00" + b"junk", "raw-zstd", (28, 28))
