"""The deterministic simulated AI provider (see docs/simulator.md).

* :class:`SimulatorProvider` -- the in-process provider the server uses;
* :class:`Simulator` -- the planner both faces share (scenario + seed -> streams);
* :func:`load_scenario` -- scenario files (``simulator/scenarios/*.yaml`` or a path);
* :class:`VirtualClock` -- virtual time for tests;
* ``python -m simulator`` -- the OpenAI-compatible HTTP face (:mod:`simulator.http`).
"""

from simulator.clock import Clock, RealClock, VirtualClock
from simulator.directives import parse_directives
from simulator.provider import SimulatorConfig, SimulatorProvider
from simulator.scenario import Scenario, ScenarioError, load_scenario
from simulator.script import Simulator

__all__ = [
    "Clock",
    "RealClock",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "SimulatorConfig",
    "SimulatorProvider",
    "VirtualClock",
    "load_scenario",
    "parse_directives",
]
