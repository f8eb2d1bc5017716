# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The sensor front end, ROS-free: image messages to arrays and back (``image_codec``), thermal
counts to [0, 1] (``thermal``), thermal-to-RGB registration (``registration``), thermal/RGB
pairing by stamp (``pairing``) and the output stamp order (``stamp_order``)."""
