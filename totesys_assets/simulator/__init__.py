"""The demo totesys source: the real schema with a seeded, realistic, advancing history.

`Simulator(url, seed=42, scale=1.0)` creates the schema, seeds history, advances simulated time
and loads the real reference exports; `totesys-sim` (cli.py) exposes the same on the command line.
"""

from totesys_assets.simulator.simulator import Simulator, SimulatorError

__all__ = ["Simulator", "SimulatorError"]
