"""The one composition of each flow, written once: a sequence calls its steps through a runner
(flows/runner.py), so it runs as a Prefect flow (flows/*.py) or, for the command line without a
Prefect server, as plain calls. Sequences import no Prefect and hold no SQL."""
