"""DeviceClient: one result per input, computed where the planner says, never lost.

    image ─► estimates ─► planner ─► config
      LOCAL          ─► whole network, maybe stopping at an exit ─► "local" / "device-exit"
      SPLIT          ─► head ─► exit? ─yes─► "device-exit" (nothing sent)
                                  │no
                                  └► codec ─► EdgePool ─► reply ─► "edge"
      OFFLOAD_INPUT  ─► PNG or JPEG at the planned quality ─► EdgePool ─► reply ─► "edge"
      edge failed or late ─► finish on the device from what it has ─► "local", fallback

    with DeviceClient.for_model("resnet18_imagenette", edge="10.0.0.5:50051") as client:
        result = client.infer("frame.jpg")          # or await client.infer_async(...)
        print(result.class_name, result.top_k)

Settings come in three groups (``device_client.options``); the link's background watch is
``device_client.monitor``; results are ``device_client.results``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from splitnet_proto.messages import InferReply, InferRequest

from device_client.battery import make_battery
from device_client.compute import Compute, run_here
from device_client.edge import EdgeError
from device_client.estimators import Estimates
from device_client.knowledge import DeviceKnowledge
from device_client.monitor import LinkMonitor
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.planner import Plan, Planner
from device_client.replicas import EdgePool, resolve_targets
from device_client.results import (
    WHERE_EDGE,
    WHERE_EXIT,
    WHERE_LOCAL,
    Frame,
    InferenceResult,
    LatencyBreakdown,
)
from splitnet import codec
from splitnet.checkpoint import LoadedModel
from splitnet.config import Config, Placement
from splitnet.data.eval_sets import class_names
from splitnet.images import decode_image, resize_image
from splitnet.input_codecs import encode_image
from splitnet.preprocess import images_to_input
from splitnet.supervision import Supervisor
from splitnet.zoo import DEFAULT_MODEL, card_path_for, checkpoint_for, load_pretrained


@dataclass
class PreparedInput:
    """One input after its device part (:meth:`DeviceClient.begin`): finished on the device
    (``result``), or a payload to send with the way to finish it on the device if the
    edge fails (``finish``)."""

    started: float  # perf_counter at the start of begin()
    plan: Plan
    est: Estimates
    result: InferenceResult | None
    payload: bytes | None
    device_ms: float
    finish: Callable[[], torch.Tensor] | None


class DeviceClient:
    """The device side of splitnet. Use as a context manager, or call ``close()``.

    ``model``: a zoo model's name, a checkpoint path, or a model already loaded.
    ``edge``: one ``host:port``, several replicas (``host:port,host:port`` or
    ``dns:///name:port``, see ``device_client.replicas``), or None to run on the device
    only. ``policy``: a policy name, or PolicyOptions; ``link`` and ``device``: see
    ``device_client.options``.
    """

    def __init__(self, model: str | Path | LoadedModel = DEFAULT_MODEL,
                 edge: str | None = None, *, policy: str | PolicyOptions = "adaptive",
                 link: LinkOptions | None = None, device: DeviceOptions | None = None) -> None:
        policy = PolicyOptions(policy) if isinstance(policy, str) else policy
        link = link or LinkOptions()
        device = device or DeviceOptions()
        # where the device's own work runs (experiments put an emulated device here)
        self.compute: Compute = run_here
        self.loaded, checkpoint = _loaded(model)
        self.model = self.loaded.model
        from splitnet.card import ModelCard

        self.card = ModelCard.load(card_path_for(checkpoint))
        if self.card.model_id != self.loaded.model_id:
            raise ValueError(f"model card is for {self.card.model_id}, checkpoint is "
                             f"{self.loaded.model_id}; rewrite it with python -m splitnet.profile")
        self.class_names = class_names(self.model.spec.name)
        self.planner = Planner(self.card, policy.name, policy.accuracy_floor,
                               policy.deadline_ms, device.power, policy.fixed_config)
        self.policy = policy.name
        self.power = device.power
        self.battery = make_battery(device.battery) if isinstance(device.battery, str) \
            else device.battery
        self.deadline_ms = policy.deadline_ms
        # An offload not answered in time is finished locally (see ``Plan.offload_timeout_s``).
        self.offload_timeout_ms = link.offload_timeout_ms
        self.knowledge = DeviceKnowledge(self.card, self.planner.candidates)
        self.bandwidth, self.rtt = self.knowledge.bandwidth, self.knowledge.rtt
        self.head_speed, self.health = self.knowledge.head_speed, self.knowledge.health
        self.bad_replies = 0  # replies that failed the check (wrong model, shape, values)
        # A policy that never offloads (local) never talks to the edge.
        offloads = edge is not None and self.planner.may_offload
        self.link = (EdgePool(resolve_targets(edge), self.loaded.model_id, link.token,
                              link.tls_ca, link.tls_identity)
                     if edge is not None and offloads else None)
        # the background loops run supervised: restarted when they crash; one that stalls
        # or keeps crashing is this client's failure (``healthy``; a service exits on it)
        self.supervisor = Supervisor(self._background_failed)
        self.monitor: LinkMonitor | None = None
        if self.link is not None:
            self.monitor = LinkMonitor(self.link, self.knowledge, link.probe_interval_s,
                                       self.supervisor)
            if link.monitor:
                self.monitor.start(link.load_feed)

    @classmethod
    def for_model(cls, name: str = DEFAULT_MODEL, edge: str | None = None,
                  **options: str | PolicyOptions | LinkOptions | DeviceOptions) -> DeviceClient:
        """A client of the shipped model ``name``, talking to ``edge`` (see the class)."""
        return cls(name, edge, **options)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- lifecycle
    @property
    def healthy(self) -> bool:
        """Every background loop alive and making progress."""
        return self.supervisor.healthy

    def _background_failed(self, name: str, reason: str) -> None:
        logging.getLogger(__name__).critical("device client: %s %s", name, reason)

    def close(self) -> None:
        self.supervisor.stop(join_s=3)
        if self.monitor is not None:
            self.monitor.close()
        if self.link is not None:
            self.link.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warm_up(self) -> float:
        """Run the policy's local config once on a blank frame (after one untimed run) and
        seed the device-speed estimate with it: the card was profiled on another machine,
        and without this the first inputs are planned as if the device were that one.
        Then measure the link afresh, with one probe before the first input. Returns
        the measured ms."""
        x = torch.zeros(1, *self.model.spec.input_shape)
        config = self._local_config(self.estimates()).without_exit()
        with torch.no_grad():
            self.compute("head", self.model.forward_head, x, config, int8=config.int8)
            started = time.perf_counter()
            self.compute("head", self.model.forward_head, x, config, int8=config.int8)
        measured_ms = (time.perf_counter() - started) * 1000
        self.knowledge.learn_device_time(config, measured_ms, exited=False)
        if self.link is not None:
            self._warm_up_offload()
        # probes taken while this process loaded its models timed the loading (the GIL,
        # the CPU) as much as the link: measure it again now, once before the first input,
        # so that input is planned from the link rather than the 1 Mbit/s prior (a Pi Zero 2
        # on a 7 Mbit/s uplink would otherwise weigh a JPEG offload as if at 1 Mbit/s);
        # then the monitor goes on
        self.bandwidth.restart()
        if self.link is not None and self.health.up:
            with contextlib.suppress(EdgeError):  # a slow link: the monitor tries again
                self.probe_once(timeout_s=1.0)
        return measured_ms

    def _warm_up_offload(self) -> None:
        """Encode a blank frame with every input codec (a codec's first use loads its
        library: about 20 ms here, a second on an emulated Pi Zero 2), then offload one, so
        that the edge's speed is measured before the first input: the prior guesses the
        edge twice as fast as the card's host, and a Pi Zero 2 then sent its first frame to
        an edge that took 100 ms, not 25, over an ATT uplink (1.3 to 1.6 s)."""
        channels, height, width = self.model.spec.input_shape
        frame = np.zeros((height, width, 3) if channels == 3 else (height, width), np.uint8)
        for codec_row in self.card.input_codecs:
            self.compute("encode_image", encode_image, frame, codec_row.codec)
        self.infer(frame, self.planner.candidates.default_offload)  # never raises: an
        # edge that fails it is finished locally and counted, as for any input

    # ---------------------------------------------------------------- estimates
    def estimates(self) -> Estimates:
        return self.knowledge.estimates(self.battery.level(), self.link is not None)

    def probe_once(self, padding_bytes: int | None = None, timeout_s: float = 2.0) -> None:
        """One probe pair now (see ``LinkMonitor.probe_once``)."""
        assert self.monitor is not None, "a client without an edge has nothing to probe"
        self.monitor.probe_once(padding_bytes, timeout_s)

    # ---------------------------------------------------------------- inference
    def infer(self, image: Frame, config: Config | None = None) -> InferenceResult:
        """Classify one frame. Always returns a result.

        ``image`` is an array, uint8 or float in [0, 1], grey (H, W) or colour (H, W, 3) as
        the model takes; or an image file (JPEG, PNG, ...) or its bytes, which are decoded
        (and resized to the model's input) here, inside the timed latency. ``config``
        overrides the policy's choice for this input (a replayed schedule, a test).
        """
        return self.complete(self.begin(image, config))

    async def infer_async(self, image: Frame, config: Config | None = None) -> InferenceResult:
        """:meth:`infer` for an asyncio application: runs on a worker thread, so the
        event loop goes on while the device computes and the edge answers."""
        return await asyncio.to_thread(self.infer, image, config)

    def begin(self, image: Frame, config: Config | None = None,
              edge_lane_free: bool | None = None) -> PreparedInput:
        """The device's part of :meth:`infer`: decode, plan, run the head (or encode the
        frame). A pipeline runs this for frame i + 1 while :meth:`complete` waits on the
        edge for frame i, and says whether the edge lane is free (see ``Planner.plan``)."""
        started = time.perf_counter()
        pixels = self._pixels(image)
        x = images_to_input(pixels[None])
        est = self.estimates()
        plan = self.planner.plan(est, edge_lane_free) if config is None \
            else self.planner.plan_for(config, est)
        config = plan.config
        # the device's compute for an input, as the card times it: the head with the
        # encoding of what it sends (zstd codes, or the JPEG/PNG of an offloaded frame)
        t = time.perf_counter()
        with torch.no_grad():
            if config.placement is Placement.OFFLOAD_INPUT:
                payload = self.compute("encode_image", encode_image, pixels,
                                       config.input_codec or "png")
                encode_ms = (time.perf_counter() - t) * 1000
                self.knowledge.learn_device_time(config, encode_ms, exited=False)
                return PreparedInput(started, plan, est, None, payload, encode_ms,
                             lambda: self._finish_locally(x, est))
            head = self.compute("head", self.model.forward_head, x, config, int8=config.int8)
            code = self.compute("codec.encode", codec.encode, head.code) \
                if head.code is not None else None
            device_ms = (time.perf_counter() - t) * 1000
        exited = bool(head.exited[0])
        self.knowledge.learn_device_time(config, device_ms, exited)
        if code is None:  # LOCAL, or an exit fired: nothing to send
            where = WHERE_EXIT if exited else WHERE_LOCAL
            local = self._local_result(config, head.logits, device_ms, where, plan)
            return PreparedInput(started, plan, est, local, None, device_ms, None)
        return PreparedInput(started, plan, est, None, code, device_ms,
                     lambda: self.compute("finish", self.model.finish_on_device, head, config,
                                          int8=config.int8))

    def complete(self, prepared: PreparedInput) -> InferenceResult:
        """The rest of :meth:`infer`: offload what :meth:`begin` prepared and wait for the
        edge (or finish on the device if it fails); then the accounting."""
        plan, est, config = prepared.plan, prepared.est, prepared.plan.config
        result = prepared.result
        if result is None:
            assert prepared.payload is not None and prepared.finish is not None
            with torch.no_grad():
                result = self._offload_or_finish_locally(
                    config, prepared.payload, plan, prepared.device_ms, prepared.finish)
        total_ms = (time.perf_counter() - prepared.started) * 1000
        latency = LatencyBreakdown(result.latency.device_ms, result.latency.transfer_ms,
                                   result.latency.server_ms, result.latency.local_tail_ms,
                                   total_ms)
        energy = result.energy_mj
        self.battery.drain(energy)
        # everything not spent in the model or on the network is the client's own overhead
        model_ms = latency.device_ms + latency.transfer_ms + latency.server_ms \
            + latency.local_tail_ms
        overhead_ms = max(total_ms - model_ms, 0.0)
        if not result.fallback:
            self.knowledge.learn_overhead(
                config.placement if result.where == WHERE_EDGE else Placement.LOCAL, overhead_ms)
        return InferenceResult(
            result.label, result.probabilities, config, result.where, latency,
            result.bytes_sent, result.bytes_received, energy, result.fallback,
            est.bandwidth_bps if self.link is not None else 0.0,  # 0: nothing estimated
            est.battery_level, plan.latency_ms, overhead_ms, result.error
        ).named(self.class_names)

    def infer_on_device(self, image: Frame) -> InferenceResult:
        """Classify one frame on the device only, the way this policy runs with no edge:
        what a frame stream falls back on when a step of its pipeline fails."""
        started = time.perf_counter()
        pixels = self._pixels(image)
        est = self.estimates()
        config = self._local_config(est)
        with torch.no_grad():
            head = self.compute("head", self.model.forward_head,
                                images_to_input(pixels[None]), config, int8=config.int8)
        device_ms = (time.perf_counter() - started) * 1000
        where = WHERE_EXIT if bool(head.exited[0]) else WHERE_LOCAL
        return replace(self._local_result(config, head.logits, device_ms, where,
                                          self.planner.plan_for(config, est)),
                       fallback=True).named(self.class_names)

    def finish_on_device(self, prepared: PreparedInput, reason: str) -> InferenceResult:
        """Answer a frame whose offload step failed from what its device part holds."""
        if prepared.result is not None:
            return prepared.result
        assert prepared.finish is not None
        started = time.perf_counter()
        with torch.no_grad():
            logits = prepared.finish()
        local_ms = (time.perf_counter() - started) * 1000
        failed = InferenceResult(
            -1, (), prepared.plan.config, WHERE_LOCAL, LatencyBreakdown(prepared.device_ms),
            0, 0, self.power.energy_mj(prepared.device_ms), True, 0.0, 0.0,
            prepared.plan.latency_ms, 0.0, reason)
        return self._fallback(failed, logits, local_ms).named(self.class_names)

    def _local_config(self, est: Estimates) -> Config:
        """What this policy runs with no edge (int8 and an exit when the policy uses them)."""
        return self.planner.plan(replace(est, edge_available=False)).config

    def _finish_locally(self, x: torch.Tensor, est: Estimates) -> torch.Tensor:
        """Logits for an input the edge did not answer, the way the policy runs LOCAL."""
        config = self._local_config(est)
        return self.compute("head", self.model.forward_head, x, config,
                            int8=config.int8).logits

    def _pixels(self, image: Frame) -> np.ndarray:
        channels, height, width = self.model.spec.input_shape
        if isinstance(image, (bytes, str, os.PathLike)):
            pixels = decode_image(image, height)
            return pixels[..., 0].copy() if channels == 1 else pixels  # grey models: R=G=B
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 \
                and image.shape[2] == 3 and (channels == 1 or image.shape[:2] != (height, width)):
            # a camera's RGB frame: resized here, inside the measured latency
            rgb = image if image.shape[:2] == (height, width) else resize_image(image, height)
            return rgb[..., 0].copy() if channels == 1 else rgb  # grey models: R=G=B
        return _as_uint8(image, (height, width) if channels == 1 else (height, width, channels))

    def _offload_or_finish_locally(self, config: Config, payload: bytes, plan: Plan,
                                   device_ms: float,
                                   finish: Callable[[], torch.Tensor]) -> InferenceResult:
        """Offload; if the edge fails, ``finish`` the input on the device (a fallback)."""
        outcome = self._offload(config, payload, plan, device_ms)
        if outcome.error is None:
            return outcome
        started = time.perf_counter()
        logits = finish()
        return self._fallback(outcome, logits, (time.perf_counter() - started) * 1000)

    def _local_result(self, config: Config, logits: torch.Tensor, device_ms: float, where: str,
                      plan: Plan) -> InferenceResult:
        probabilities = torch.softmax(logits[0], 0)
        return InferenceResult(
            int(probabilities.argmax()), tuple(probabilities.tolist()), config, where,
            LatencyBreakdown(device_ms=device_ms), 0, 0, self.power.energy_mj(device_ms), False,
            0.0, 0.0, plan.latency_ms, 0.0)

    def _offload(self, config: Config, payload: bytes, plan: Plan,
                 device_ms: float = 0.0) -> InferenceResult:
        """Send one input; on any failure, a result with ``error`` set and no label."""
        assert self.link is not None
        request = InferRequest(self.link.next_request_id(), config.for_edge(), payload)
        timeout_s = plan.offload_timeout_s(self.offload_timeout_ms)
        sent_at = time.perf_counter()
        try:
            reply = self.link.infer(request, timeout_s)
        except EdgeError as error:
            waited_ms = (time.perf_counter() - sent_at) * 1000
            self.knowledge.learn_failure(len(payload), waited_ms, error.timed_out, str(error))
            return InferenceResult(
                -1, (), config, WHERE_LOCAL, LatencyBreakdown(device_ms, waited_ms), len(payload),
                0, self.power.energy_mj(device_ms, waited_ms), True, 0.0, 0.0, plan.latency_ms,
                0.0, str(error))
        round_trip_ms = (time.perf_counter() - sent_at) * 1000
        problem = reply.problem(request.request_id, request.config, self.loaded.model_id,
                                self.model.spec.num_classes)
        if problem is not None:  # the edge answered, but not with this input's answer
            self.bad_replies += 1
            self.knowledge.learn_failure(len(payload), round_trip_ms, False,
                                         f"bad reply: {problem}")
            return InferenceResult(
                -1, (), config, WHERE_LOCAL, LatencyBreakdown(device_ms, round_trip_ms),
                len(payload), reply.wire_bytes, self.power.energy_mj(device_ms, round_trip_ms),
                True, 0.0, 0.0, plan.latency_ms, 0.0, f"bad reply from the edge: {problem}")
        return self._edge_result(config, payload, reply, device_ms, round_trip_ms, plan)

    def _edge_result(self, config: Config, payload: bytes, reply: InferReply, device_ms: float,
                     round_trip_ms: float, plan: Plan) -> InferenceResult:
        server_ms = reply.queue_ms + reply.compute_ms
        network_ms, transfer_ms, path_ms = self.knowledge.learn_reply(
            len(payload), round_trip_ms, server_ms, reply.compute_ms, reply.load.queue_ms_recent,
            plan.tail_mmacs)
        bandwidth = self.bandwidth.estimate_bps
        energy = self.power.energy_mj(device_ms, wait_ms=path_ms + server_ms,
                                      transfer_ms=transfer_ms, throughput_bps=bandwidth)
        return InferenceResult(reply.label, reply.probabilities, config, WHERE_EDGE,
                               LatencyBreakdown(device_ms, network_ms, server_ms),
                               len(payload), reply.wire_bytes, energy, False, 0.0, 0.0,
                               plan.latency_ms, 0.0)

    def _fallback(self, failed: InferenceResult, logits: torch.Tensor,
                  local_ms: float) -> InferenceResult:
        probabilities = torch.softmax(logits[0], 0)
        latency = LatencyBreakdown(failed.latency.device_ms, failed.latency.transfer_ms, 0.0,
                                   local_ms)
        energy = failed.energy_mj + self.power.energy_mj(local_ms)
        return InferenceResult(int(probabilities.argmax()), tuple(probabilities.tolist()),
                               failed.config, WHERE_LOCAL, latency, failed.bytes_sent, 0, energy,
                               True, 0.0, 0.0, failed.predicted_latency_ms, 0.0, failed.error)


def _loaded(model: str | Path | LoadedModel) -> tuple[LoadedModel, Path]:
    """A model (and its checkpoint's path, where its card lies) from a zoo name, a path or
    a model already loaded."""
    if isinstance(model, LoadedModel):
        return model, model.path
    path = Path(model)
    if not path.suffix and not path.exists():  # a name: the zoo's checkpoint of it
        path = checkpoint_for(str(model))
    return load_pretrained(path), path


def _as_uint8(image: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """``image`` as a contiguous uint8 array of ``shape`` (floats are taken in [0, 1])."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.shape != shape:
        array = array.squeeze()
    if array.shape != shape:
        what = "greyscale image (H, W)" if len(shape) == 2 else "colour image (H, W, 3)"
        raise ValueError(f"this model takes one {what} of shape {shape}, got shape "
                         f"{array.shape}; pass an image file to have it decoded and resized")
    if array.dtype != np.uint8:
        array = np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)
