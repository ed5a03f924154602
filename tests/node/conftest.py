"""The benchmarks' modules (the chaos soak's), importable as their scripts import each
other."""

from tests.helpers import bench_importable

bench_importable()
