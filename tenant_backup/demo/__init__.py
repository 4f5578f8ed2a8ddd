"""``make demo``: demo schemas and their data (``generate``), and the demo itself (``run``).
An entry point: it may import every stage, and (lazily, in ``run``) the flows.
"""
