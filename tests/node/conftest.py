"""The soak's tests import the benchmarks' modules as their scripts import each other, as
tests/bench does."""

from tests.helpers import bench_importable

bench_importable()
