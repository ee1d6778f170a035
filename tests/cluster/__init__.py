"""tests/cluster: multi-process replication tests (a package, so that its conftest and helpers
never shadow another suite's `conftest` module when several suites run in one pytest)."""
