# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The DDS test graph shared by the node tests: the fusion node under test and a driver node
in one rclpy context, spun by one executor thread (loopback)."""

import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile
from sensor_msgs.msg import CameraInfo, Image


class NodeGraph:
    """``node`` (a FusionNode with ``params``) and ``driver``: publishers on the node's inputs
    (``thermal_pub``, ``rgb_pub``, ``rgb_info_pub``) and the fused output collected in
    ``fused`` and ``infos``. Subclasses add their own driver entities in :meth:`_add_entities`
    (called before spinning starts)."""

    driver_name = 'tesg_test_driver'
    output_depth = 10

    def __init__(self, params, wait_for_discovery=True):
        from tesg_ros.ros.fusion_node import FusionNode

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = FusionNode(context=self.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in params.items()])
        self.driver = rclpy.create_node(self.driver_name, context=self.context)
        self.fused, self.infos = [], []
        output = QoSProfile(depth=self.output_depth)
        self.driver.create_subscription(Image, 'fused/image', self.fused.append, output)
        self.driver.create_subscription(CameraInfo, 'fused/camera_info', self.infos.append,
                                        output)
        sensor = qos_profile_sensor_data
        self.thermal_pub = self.driver.create_publisher(Image, 'thermal/image', sensor)
        self.rgb_pub = self.driver.create_publisher(Image, 'rgb/image', sensor)
        self.rgb_info_pub = self.driver.create_publisher(CameraInfo, 'rgb/camera_info', sensor)
        self._add_entities(self.driver)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.driver)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        if wait_for_discovery:
            self.wait_for(lambda: self.thermal_pub.get_subscription_count() > 0
                          and self.rgb_pub.get_subscription_count() > 0, 'discovery')

    def _add_entities(self, driver):
        """Extra subscriptions and publishers of the driver node."""

    def _timeout_detail(self):
        return ''

    def wait_for(self, predicate, what, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.02)
        detail = self._timeout_detail()
        raise AssertionError(f'timed out waiting for {what}' + (f': {detail}' if detail else ''))

    def close(self):
        self.executor.shutdown()  # first: no callback runs while the node tears down
        self.thread.join(timeout=10.0)
        self.node.shutdown()
        self.node.destroy_node()
        self.driver.destroy_node()
        rclpy.shutdown(context=self.context)
