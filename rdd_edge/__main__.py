"""``python -m rdd_edge`` (also what ``torchrun -m rdd_edge distill ...`` runs)."""

from rdd_edge.cli import main

if __name__ == "__main__":
    main()
