"""Everything hybridsweep asks of MLflow, one concern per module:

- :mod:`~hybridsweep.tracking.store`: the client of a store, tag names, run roles, the rank-zero rule;
- :mod:`~hybridsweep.tracking.identity`: what a point's results depend on, hashed; code provenance;
- :mod:`~hybridsweep.tracking.tracker`: logging into one run (and Lightning's logger into it);
- :mod:`~hybridsweep.tracking.claims`: which process trains a point: skip, leave, resume or start.

Sweep parent runs are :mod:`hybridsweep.sweep_runs`'s; reading runs back for the reports is
:mod:`hybridsweep.reports.runs`'.
"""
