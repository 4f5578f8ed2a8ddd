"""Prefect tasks: thin shells over the plain steps in ``tenant_backup``, one step each.

A task resolves where things live (blocks or environment) itself, calls one plain function and
returns something small and serializable; connections never cross a task boundary.
"""
