"""Device energy: CPU power while computing and waiting, radio power while sending.

    E = P_busy · t_compute  +  P_idle · t_wait  +  P_radio(throughput) · t_transfer
    P_radio(u) = alpha_up · u[Mbit/s] + beta        (Huang et al., MobiSys 2012)

All parameters live here, each with its source, and every one can be overridden
(``PowerProfile(...)`` or ``dataclasses.replace``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RadioProfile:
    """Linear uplink power model: P = alpha_up_mw_per_mbps * throughput + beta_mw."""

    name: str
    alpha_up_mw_per_mbps: float
    beta_mw: float


# J. Huang, F. Qian, A. Gerber, Z. M. Mao, S. Sen, O. Spatscheck, "A Close Examination of
# Performance and Power Characteristics of 4G LTE Networks", MobiSys 2012, Table 4
# (uplink alpha_u and base beta; the RRC tail energy is not modelled).
LTE = RadioProfile("lte", alpha_up_mw_per_mbps=438.39, beta_mw=1288.04)
WIFI = RadioProfile("wifi", alpha_up_mw_per_mbps=283.17, beta_mw=132.86)
THREE_G = RadioProfile("3g", alpha_up_mw_per_mbps=868.98, beta_mw=817.88)
RADIOS = {r.name: r for r in (LTE, WIFI, THREE_G)}


@dataclass(frozen=True)
class PowerProfile:
    """Device power draw. Defaults: Raspberry Pi 4 Model B.

    idle 2.7 W and fully loaded 6.4 W are the commonly quoted whole-board measurements of
    the Pi 4 (e.g. the Raspberry Pi Dramble and Tom's Hardware power tests).
    """

    name: str = "rpi4"
    idle_w: float = 2.7
    busy_w: float = 6.4
    radio: RadioProfile = LTE

    def radio_w(self, throughput_bps: float) -> float:
        """Radio power while sending at ``throughput_bps``."""
        mbps = max(throughput_bps, 0.0) / 1e6
        return (self.radio.alpha_up_mw_per_mbps * mbps + self.radio.beta_mw) / 1000

    def energy_mj(self, compute_ms: float, wait_ms: float = 0.0, transfer_ms: float = 0.0,
                  throughput_bps: float = 0.0) -> float:
        """Energy in millijoules: compute at busy power, waiting at idle, radio on top."""
        return (self.busy_w * compute_ms + self.idle_w * max(wait_ms, 0.0)
                + self.radio_w(throughput_bps) * max(transfer_ms, 0.0))


RPI4 = PowerProfile()
