"""Benchmark scripts: standalone, argparse, print a table and write JSON."""
