"""`python -m deltarank ...` (also what `torchrun -m deltarank` runs)."""

from deltarank.cli import main

if __name__ == "__main__":
    main()
