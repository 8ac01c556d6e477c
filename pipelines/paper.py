"""``python pipelines/paper.py ...``: the paper's tables and curves (see :mod:`hybridsweep.paper`)."""

from hybridsweep.paper import main

if __name__ == "__main__":
    main()
