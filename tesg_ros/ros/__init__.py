# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The ROS shell, the only package that imports rclpy: the fusion node (``fusion_node``) and
the rclpy side of the live replay (``live_replay``). Everything it drives is ROS-free."""
