# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Load a script of bench/ as a module (bench/ is not a package), for the tests of its helpers."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / 'bench'


def load_bench_script(name):
    """bench/<name>.py as a fresh module object."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
