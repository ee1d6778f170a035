"""tests/proxy: triekv-proxy in front of two shards (a package, like tests/cluster, so its
conftest never shadows another suite's)."""
