"""The fuzz campaign as pytest items, one per worker, for ``pytest -n K`` (pytest-xdist).

``python -m harness fuzz --workers K`` runs this file with the campaign's
settings in the environment (:data:`harness.fuzz.cli.CONFIG_ENV`); item
``i`` runs worker ``i``'s campaign (:func:`harness.fuzz.cli.run_worker`),
which writes its stats and findings under ``--out``.  Findings are data,
not test failures: an item fails only if its campaign could not run.
"""

from __future__ import annotations

import json
import os

import pytest

from harness.fuzz.cli import CONFIG_ENV, run_worker


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One item per worker."""
    if "worker_index" in metafunc.fixturenames:
        config = json.loads(os.environ.get(CONFIG_ENV, "{}"))
        metafunc.parametrize("worker_index", range(int(config.get("workers", 0))))


def test_fuzz_worker(worker_index: int) -> None:
    """Worker ``worker_index``'s campaign."""
    config = json.loads(os.environ[CONFIG_ENV])
    summary = run_worker(config, worker_index)
    assert summary["worker"] == f"w{worker_index}"
