# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The ROS layer is real: two rclpy nodes exchange a sensor_msgs/Image over DDS."""

import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data, QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402


def test_two_nodes_exchange_an_image_over_dds():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        talker = rclpy.create_node('tesg_test_talker', context=context)
        listener = rclpy.create_node('tesg_test_listener', context=context)
        received = []
        listener.create_subscription(Image, 'dds_check/image', received.append,
                                     qos_profile_sensor_data)
        # A reliable publisher must reach a best-effort (sensor-data) subscriber.
        pub = talker.create_publisher(Image, 'dds_check/image', QoSProfile(depth=5))

        pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
        msg = Image(height=4, width=6, encoding='bgr8', is_bigendian=0, step=18,
                    data=pixels.tobytes())
        msg.header.frame_id = 'rgb_optical_frame'
        msg.header.stamp.sec = 42

        executor = SingleThreadedExecutor(context=context)
        executor.add_node(talker)
        executor.add_node(listener)
        deadline = time.monotonic() + 20.0
        while not received and time.monotonic() < deadline:
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=context)

    assert received, 'no Image arrived over DDS within 20 s'
    got = received[0]
    assert (got.height, got.width, got.encoding, got.step) == (4, 6, 'bgr8', 18)
    assert got.header.frame_id == 'rgb_optical_frame' and got.header.stamp.sec == 42
    assert np.array_equal(np.frombuffer(bytes(got.data), np.uint8).reshape(4, 6, 3), pixels)
