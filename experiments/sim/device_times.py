"""How long a simulated device takes for each piece of its work, priced as the emulator
prices it: the least CPU time the work takes on this host × the device profile's factor
for its precision (experiments.emulation, experiments.calibration).

    head(config, exited) ─► the emulator's least-CPU table has it? least × factor,
                            + encoding what it sends (a code), at the fp32 factor
                          ─► else the card's time × (least ÷ card, of the whole network
                            in that precision) × factor (the card's head includes encoding)
    finish(config)       ─► the table's least × factor, else the card's tail cost the same way
    image(codec)         ─► a frame's least encoding time (the emulator's, else measured
                            here; the median over frames) × the fp32 factor (Pillow)

The table (runs/least_cpu.json) is what the emulated devices measured on this host; on a
host without one, every time comes from the card and one measurement of the whole network.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from device_client.planner import Candidates
from experiments.calibration import LeastCpu, calibrate
from experiments.device_profiles import PROFILES
from splitnet import codec
from splitnet.card import ModelCard
from splitnet.config import LOCAL, Config, Placement
from splitnet.data.eval_sets import default_cache_dir, stream_images
from splitnet.input_codecs import encode_image
from splitnet.zoo import checkpoint_for, load_card, load_pretrained


@dataclass
class DeviceTimes:
    """One device profile's times for one model's work (see the module)."""

    candidates: Candidates
    fp32_factor: float
    int8_factor: float
    least_ms: dict[str, float] = field(default_factory=dict)  # repr(work) ─► host least ms
    card_ratio: dict[bool, float] = field(default_factory=lambda: {False: 1.0, True: 1.0})
    encode_ms: dict[str, float] = field(default_factory=dict)  # code kind ─► host least ms
    image_ms: dict[str, float] = field(default_factory=dict)  # input codec ─► host least ms
    _heads: dict[tuple[Config, bool], float] = field(default_factory=dict, repr=False)

    @property
    def card(self) -> ModelCard:
        return self.candidates.card

    def factor(self, int8: bool) -> float:
        return self.int8_factor if int8 else self.fp32_factor

    def _scaled_card(self, card_ms: float, int8: bool) -> float:
        return card_ms * self.card_ratio[int8] * self.factor(int8)

    def head(self, config: Config, exited: bool) -> float:
        """The device part of ``config`` for one input (encoding what it sends included)."""
        known = self._heads.get((config, exited))
        if known is None:
            known = self._heads[(config, exited)] = self._head(config, exited)
        return known

    def _head(self, config: Config, exited: bool) -> float:
        shape = (1, *self.card.input_shape)
        least = self.least_ms.get(repr(("head", config, shape, exited)))
        if least is not None:
            ms = least * self.factor(config.int8)
            if config.placement is Placement.SPLIT and not exited:
                ms += self.encode_ms.get(code_kind(config), 0.0) * self.fp32_factor
            return ms
        card_ms = (self.candidates.exit_path_ms[config] if exited
                   else self.card.device_ms(config))
        return self._scaled_card(card_ms, config.int8)

    def finish(self, config: Config) -> float:
        """The rest of a SPLIT input on the device, in its head's precision."""
        least = self.least_ms.get(repr(("finish", config)))
        if least is not None:
            return least * self.factor(config.int8)
        index = self.candidates.index[config]
        card_ms = float(self.candidates.tail_mmacs[index]
                        * self.candidates.tail_ms_per_mmac[index])
        return self._scaled_card(card_ms, config.int8)

    def image(self, input_codec: str) -> float:
        """Encoding a frame to send it whole (Pillow: the fp32 factor): its least CPU ms
        here, as the emulator prices it, else the card's median."""
        host_ms = self.image_ms.get(input_codec)
        if host_ms is None:
            host_ms = self.card.input_codec(input_codec).encode_ms or 0.5
        return host_ms * self.fp32_factor


IMAGE_FRAMES = 12  # camera frames whose encoding is timed, per input codec


def code_kind(config: Config) -> str:
    return "raw" if config.raw else "entropy" if config.rate is not None else "slimmable"


_MEASURED: dict[str, tuple[dict[bool, float], dict[str, float], dict[str, float]]] = {}


def for_device(device: str, card: ModelCard) -> DeviceTimes:
    """The emulated ``device``'s times for ``card``'s model on this host."""
    calibration = calibrate(PROFILES[device])
    table = LeastCpu(card.arch)
    if card.arch not in _MEASURED:
        _MEASURED[card.arch] = _measure(card, table)
    ratio, encode, image = _MEASURED[card.arch]
    return DeviceTimes(Candidates(card), calibration.fp32_factor, calibration.int8_factor,
                       {key: s * 1000 for key, s in table.seconds.items()}, ratio, encode,
                       image)


@torch.no_grad()
def _measure(card: ModelCard, table: LeastCpu
             ) -> tuple[dict[bool, float], dict[str, float], dict[str, float]]:
    """Per precision, the whole network's least CPU ms over the card's (the emulator's
    table where it has it, else measured now); per kind of code, its encoding's least ms;
    per input codec, the median over camera frames of each frame's least encoding ms."""
    model = load_pretrained(checkpoint_for(card.arch)).model
    shape = (1, *model.spec.input_shape)
    x = torch.zeros(shape)
    ratio: dict[bool, float] = {}
    for int8, card_ms in ((False, card.full.latency_ms), (True, card.full.int8_latency_ms)):
        if not card_ms:  # no int8 head: nothing runs in int8
            ratio[int8] = 1.0
            continue
        config = LOCAL.with_int8(int8)
        least_s = table.least(("head", config, shape, False))
        least_ms = least_s * 1000 if least_s is not None else least_cpu_ms(
            functools.partial(model.forward_head, x, config))
        ratio[int8] = least_ms / card_ms
    encode: dict[str, float] = {}
    for row in card.configs:
        config = Config.parse(row.config)
        kind = code_kind(config)
        if kind not in encode:
            code = model.forward_head(x, config).code
            assert code is not None
            encode[kind] = least_cpu_ms(functools.partial(codec.encode, code))
    return ratio, encode, _image_ms(card, table)


def _image_ms(card: ModelCard, table: LeastCpu) -> dict[str, float]:
    """Per input codec, a frame's encoding in least host CPU ms: the median over the
    emulator's frames of what it priced them at (its table keys a frame's encoding by what
    it produced, not by codec, so the median is over every codec it ran), else measured
    here on camera frames."""
    emulated = [s * 1000 for key, s in table.seconds.items() if key.startswith("('encode_image'")]
    if emulated:
        return {row.codec: float(np.median(emulated)) for row in card.input_codecs}
    frames = stream_images(card.arch, cache_dir=default_cache_dir(),
                           window=slice(0, IMAGE_FRAMES)).images
    return {row.codec: float(np.median([
        least_cpu_ms(functools.partial(encode_image, frame, row.codec), repeats=5)
        for frame in frames])) for row in card.input_codecs}


def least_cpu_ms(work: Callable[[], Any], repeats: int = 20) -> float:
    """The least thread CPU ms of ``work``, one torch thread, after two untimed runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = []
        for _ in range(repeats + 2):
            started = time.thread_time()
            work()
            times.append((time.thread_time() - started) * 1000)
    finally:
        torch.set_num_threads(threads)
    return min(times[2:])


def load_times(device: str, model: str) -> DeviceTimes:
    return for_device(device, load_card(checkpoint_for(model)))
