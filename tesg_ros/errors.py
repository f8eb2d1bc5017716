# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Error types shared by the ROS-free core.

Every bad input raises a subclass of :class:`TesgError`, so the node can catch one type,
count it in diagnostics and keep running.
"""


class TesgError(Exception):
    """Base class of every error the tesg_ros core raises on bad input or configuration."""


class ImageEncodingError(TesgError, ValueError, TypeError):
    """An image message cannot be converted: unknown encoding or inconsistent size/step.

    Also a ``TypeError``, like cv_bridge's ``CvBridgeError``: code written ``except TypeError``
    around cv_bridge calls catches it too.
    """


class ConfigError(TesgError, ValueError):
    """A parameter or configuration file is invalid; the message names the parameter."""


class CalibrationError(TesgError, ValueError):
    """Registration cannot be computed from the given calibration (intrinsics, H, plane)."""


class NetworkInputError(TesgError, ValueError, TypeError):
    """A tensor given to the network has the wrong type, shape, dtype or value range: the
    caller's mistake, not configuration. Also a ``ValueError`` and a ``TypeError``."""
