"""``python -m rdd_edge`` (also what ``torchrun -m rdd_edge distill ...`` runs in every process).

``python -m`` puts the working directory first on ``sys.path``; a user's project with its own
``models/`` or ``export/`` folder would then shadow our stage packages. So the folder holding
our packages goes first before anything else is imported.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])  # holds rdd_edge/, models/, distill/, export/, deploy/
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)

from rdd_edge.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
