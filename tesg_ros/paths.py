# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Locate the package's share files (config/, launch/, model/).

Installed by colcon, they live under ``share/tesg_ros`` and are found through the ament
index; in a source checkout (or an editable pip install) they sit next to this package.
The working directory is never consulted.
"""

import hashlib
from pathlib import Path

PACKAGE_NAME = 'tesg_ros'
# The default fusion weights (the distilled network), relative to the share directory; the
# larger network it was distilled from is model/tesg_fusion.safetensors.
DEFAULT_WEIGHTS = ('model', 'tesg_fusion_fast.safetensors')
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _from_ament_index():
    try:
        from ament_index_python.packages import get_package_share_directory
        from ament_index_python.packages import PackageNotFoundError
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE_NAME))
    except (PackageNotFoundError, LookupError, ValueError):
        return None


def share_dir():
    """Return the directory holding ``config/``, ``launch/`` and ``model/``.

    The source tree wins when this module is imported from a checkout (it is what the
    developer is editing); otherwise the ament index of the install is used.
    """
    if (_SOURCE_ROOT / 'package.xml').is_file() and (_SOURCE_ROOT / 'config').is_dir():
        return _SOURCE_ROOT
    installed = _from_ament_index()
    if installed is not None and installed.is_dir():
        return installed
    raise FileNotFoundError(
        f'cannot find the share directory of {PACKAGE_NAME}: not a source checkout and '
        'not in the ament index (source the workspace install/setup.bash)')


def share_path(*parts):
    """Return a path under the share directory, e.g. ``share_path('config', 'fusion.yaml')``."""
    return share_dir().joinpath(*parts)


def file_sha256(path):
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
