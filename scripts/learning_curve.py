#!/usr/bin/env python
"""Kept for old commands: the same as ``mace_transfer_learning_curve`` (mace_transfer.learning_curve)."""

from mace_transfer.cli import learning_curve_main

if __name__ == "__main__":
    learning_curve_main()
