"""The edge conformance suite: one table of cases, run on the CPython adapter and inside real Pyodide."""
