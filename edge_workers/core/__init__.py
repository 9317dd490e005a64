"""The edge gateway's runtime-agnostic core. Standard library only.

The same code runs on CPython 3.11 (``edge_workers.local``) and on Pyodide inside Cloudflare Workers
(``edge_workers/gateway/entry.py``). Everything the runtime provides (KV, outbound fetch, clock,
randomness, logging, configuration) reaches the core through the ports in ``edge_workers.core.ports``.
"""
