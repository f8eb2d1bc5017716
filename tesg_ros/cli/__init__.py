# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Console scripts (setup.py ``console_scripts``), one module each."""
