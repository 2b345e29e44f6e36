"""The memory footprint of sets of cooperating processes (``python -m sim footprint``).

Modules, one job each: :mod:`~sim.footprint.source` (the PageSource
interface), :mod:`~sim.footprint.live` (/proc of this kernel),
:mod:`~sim.footprint.recorded` (recorded or synthetic bytes),
:mod:`~sim.footprint.select` (selectors), :mod:`~sim.footprint.scan` (the
computation), :mod:`~sim.footprint.render` (table, JSON),
:mod:`~sim.footprint.plot` (the optional picture), :mod:`~sim.footprint.cli`.
"""
