"""`python -m cxrbench` (and `torchrun -m cxrbench`) runs the command line."""

from cxrbench.cli import main

if __name__ == "__main__":
    main()
