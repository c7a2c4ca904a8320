"""The `cto` console script."""
