"""`python -m deltarank ...` (also what `torchrun -m deltarank` runs)."""

from deltarank.cli import run

if __name__ == "__main__":
    run()
