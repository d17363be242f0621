from __future__ import annotations

import sys
from pathlib import Path

# the scenario helpers in test_end_to_end.py are shared by the other tests of this folder
sys.path.insert(0, str(Path(__file__).parent))

from test_end_to_end import sandbox, staging  # noqa: F401  (fixtures)
