"""The deterministic simulated AI provider."""

from simulator.clock import Clock, RealClock
from simulator.directives import parse_directives
from simulator.provider import SimulatorConfig, SimulatorProvider

__all__ = ["Clock", "RealClock", "SimulatorConfig", "SimulatorProvider", "parse_directives"]
