"""``python -m rdd_edge`` (also what ``torchrun -m rdd_edge distill ...`` runs in every process).

Every stage lives inside the ``rdd_edge`` namespace (``rdd_edge.models``, ``rdd_edge.distill``,
``rdd_edge.export``, ``rdd_edge.deploy``), so a user's own ``models/`` or ``export/`` folder in the
working directory cannot shadow them and no ``sys.path`` change is needed.
"""

from rdd_edge.cli import main

if __name__ == "__main__":
    main()
