# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""tesg_ros: text-semantics-guided infrared/visible image fusion (TeSG) for ROS 2.

The package is a ROS-free core (codec, thermal normalisation, registration, pairing,
network, semantics, metrics) with a thin rclpy shell (the node and the live-replay tool).
"""

__version__ = '0.1.0'
