# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The console scripts (setup.py ``console_scripts``), one module each, and their helpers.

=========================  ===========================================================
``fusion_node``            :mod:`tesg_ros.ros.fusion_node` (the node itself, ROS shell)
``tesg-replay``            :mod:`tesg_ros.cli.replay`
``tesg-eval``              :mod:`tesg_ros.cli.eval`
``tesg-export``            :mod:`tesg_ros.cli.export`
``tesg-make-bag``          :mod:`tesg_ros.cli.make_bag`
``tesg-compute-homography``  :mod:`tesg_ros.cli.compute_homography`
``tesg-train``             :mod:`tesg_ros.cli.train`
=========================  ===========================================================
"""


def split_ros_args(argv):
    """Split ``argv`` into ``(own, ros)``: ``--ros-args ... [--]`` is ROS's.

    ``ros`` keeps ``--ros-args`` itself (rclpy needs it) and is empty when it is absent;
    arguments after a closing ``--`` belong to the tool again (as rclpy reads them).
    """
    argv = list(argv)
    if '--ros-args' not in argv:
        return argv, []
    start = argv.index('--ros-args')
    end = argv.index('--', start) if '--' in argv[start:] else len(argv)
    return argv[:start] + argv[end + 1:], argv[start:end]


def strip_ros_args(argv):
    """``argv`` without ``--ros-args ... [--]`` (``ros2 run`` appends them to any tool)."""
    return split_ros_args(argv)[0]
