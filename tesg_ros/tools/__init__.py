# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Command-line tools of tesg_ros (console scripts declared in setup.py)."""
