"""The benchmarks' modules, importable as their scripts import each other."""

from tests.helpers import bench_importable

bench_importable()
