"""The layers of bas (docs/ARCHITECTURE.md) hold: the import-linter contracts in pyproject.toml.

Run through import-linter's own command, `lint-imports`, as a developer would; its output
names each broken contract and the imports that break it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orchestration_helpers import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_every_import_contract_is_kept():
    done = subprocess.run([str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    kept = re.search(r"Contracts: (\d+) kept, (\d+) broken", done.stdout)
    # the layers contract, the forbidden flows/tasks contract, the acyclic-siblings contract
    assert kept and kept.groups() == ("3", "0"), done.stdout
    for name in ("bas imports one way", "never imports Prefect's flows or tasks", "no import cycle"):
        assert name in done.stdout
