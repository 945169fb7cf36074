"""``StartupError``: why a node, or a command on a datadir, must not start (one line for the operator).

A module of its own, without torch, so that a command checks its arguments, its spec file and its
datadir before it imports the model code (an error in a second's fraction, not after torch's import).
"""
from __future__ import annotations


class StartupError(Exception):
    """The node must not start (a bad spec file, another chain's datadir, wrong genesis weights, a corrupt
    store...)."""
