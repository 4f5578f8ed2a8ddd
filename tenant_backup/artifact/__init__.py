"""Bytes at rest: the three formats, their manifest and codecs, the ZIP writer, and reading an
artifact back (verified, as COPY input, or as pandas DataFrames).
May import: tenancy and the plumbing.
"""
