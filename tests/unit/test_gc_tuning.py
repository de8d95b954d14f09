"""``gc_tuning.settle``: the start-up heap frozen, cycles made later still collected (in a
child interpreter: the test process's own collector is left alone)."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc
from idsvc import gc_tuning

class Node:
    def __init__(self):
        self.me = self

before = gc.get_freeze_count()
gc_tuning.settle()
assert gc.get_freeze_count() > before + 1000, gc.get_freeze_count()
for _ in range(3):
    Node()
# a cycle made after start-up is not frozen: a collection still frees it
assert gc.collect() >= 3
print("ok")
"""


def test_settle_freezes_the_start_up_heap_and_still_collects_later_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "ok", out.stderr
