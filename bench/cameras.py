# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The camera driver the node benchmarks share: a TNO pair resized to the requested size,
published as thermal (mono16) + RGB (bgr8) with best-effort QoS from one rclpy node that also
receives the fused frames, spun by its own executor thread."""

from pathlib import Path
import threading

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def sample_pair(width, height, pair='19', linear=False):
    """(thermal uint16 counts, RGB bgr8) of TNO ``pair`` at ``width`` x ``height`` (resized
    with area averaging, or bilinear with ``linear``)."""
    import cv2

    data = ROOT / 'test' / 'data' / 'tno'
    interpolation = cv2.INTER_LINEAR if linear else cv2.INTER_AREA
    ir = cv2.imread(str(data / 'ir' / f'{pair}.png'), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(data / 'vi' / f'{pair}.png'), cv2.IMREAD_GRAYSCALE)
    ir = cv2.resize(ir, (width, height), interpolation=interpolation)
    vi = cv2.cvtColor(cv2.resize(vi, (width, height), interpolation=interpolation),
                      cv2.COLOR_GRAY2BGR)
    return ir.astype(np.uint16) * 64 + 1000, vi


class Cameras:
    """An rclpy node (in the default context, initialised here) publishing the sample pair on
    the node's inputs; ``on_fused(msg)`` is called for every fused frame. Add further entities
    to ``node`` before :meth:`spin`. ``sample``: keyword arguments of :func:`sample_pair`."""

    def __init__(self, name, width, height, on_fused,
                 frame_ids=('thermal_optical_frame', 'rgb_optical_frame'), **sample):
        import rclpy
        from rclpy.qos import qos_profile_sensor_data, QoSProfile
        from sensor_msgs.msg import Image

        from tesg_ros.sensor.image_codec import numpy_to_image

        self.rclpy = rclpy
        rclpy.init()
        self.node = rclpy.create_node(name)
        thermal, rgb = sample_pair(width, height, **sample)
        self.thermal_msg = numpy_to_image(thermal, 'mono16', message_class=Image)
        self.rgb_msg = numpy_to_image(rgb, 'bgr8', message_class=Image)
        self.thermal_msg.header.frame_id, self.rgb_msg.header.frame_id = frame_ids
        sensor = qos_profile_sensor_data
        self.thermal_pub = self.node.create_publisher(Image, 'thermal/image', sensor)
        self.rgb_pub = self.node.create_publisher(Image, 'rgb/image', sensor)
        self.node.create_subscription(Image, 'fused/image', on_fused, QoSProfile(depth=10))
        self.sent = 0
        self.executor = self.spinner = None

    def spin(self):
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def discovered(self):
        """True once the node subscribes to both inputs and publishes fused/image."""
        return (self.thermal_pub.get_subscription_count() > 0
                and self.rgb_pub.get_subscription_count() > 0
                and self.node.count_publishers('fused/image') > 0)

    def publish_pair(self, stamp_ns):
        sec, nanosec = divmod(stamp_ns, 10**9)
        for msg, pub in ((self.thermal_msg, self.thermal_pub), (self.rgb_msg, self.rgb_pub)):
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            pub.publish(msg)
        self.sent += 1

    def close(self):
        if self.executor is not None:
            self.executor.shutdown()
            self.spinner.join(timeout=10.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown()
