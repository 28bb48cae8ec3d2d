"""splitnet: split computing for edge AI with learned, slimmable bottlenecks."""

from splitnet.config import LOCAL, OFFLOAD_INPUT, Config, ConfigError, Placement

__all__ = ["LOCAL", "OFFLOAD_INPUT", "Config", "ConfigError", "Placement"]
__version__ = "0.1.0"
