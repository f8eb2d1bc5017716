# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Code style (flake8, ROS 2's 99 columns, single quotes) and copyright headers."""

from pathlib import Path
import re
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ['tesg_ros', 'test', 'bench', 'launch', 'setup.py']
HEADER = '# Copyright 2026 The tesg_ros authors'


def python_files():
    for entry in SOURCE_DIRS:
        path = ROOT / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from sorted(path.rglob('*.py'))


def test_flake8():
    pytest.importorskip('flake8')
    result = subprocess.run(
        [sys.executable, '-m', 'flake8', '--inline-quotes', 'single',
         *[str(p) for p in python_files()]],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_python_file_has_the_copyright_header():
    missing = [str(p.relative_to(ROOT)) for p in python_files()
               if not p.read_text(encoding='utf-8').startswith(HEADER)]
    assert not missing, f'missing "{HEADER}": {missing}'


def test_rclpy_appears_only_in_the_ros_shell():
    allowed = {'tesg_ros/fusion_node.py', 'tesg_ros/replay.py'}
    offenders = []
    for path in sorted((ROOT / 'tesg_ros').rglob('*.py')):
        rel = str(path.relative_to(ROOT))
        text = path.read_text(encoding='utf-8')
        if rel not in allowed and re.search(r'^\s*(import|from) rclpy\b', text, re.MULTILINE):
            offenders.append(rel)
    assert not offenders, f'rclpy imported outside the ROS shell: {offenders}'
