"""tests/support: plain helpers shared by the pytest suites (no fixtures, no conftest of its own).

Each suite's conftest puts tests/ on sys.path and imports `support.triekv_procs`."""
