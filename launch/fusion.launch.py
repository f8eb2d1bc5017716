# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Launch the tesg_ros fusion node: thermal + RGB in, fused/image out.

    ros2 launch tesg_ros fusion.launch.py \
        rgb_image_topic:=/camera/color/image_raw thermal_image_topic:=/thermal/image_raw

The node is a lifecycle (managed) node. Where launch_ros has ``LifecycleNode(autostart=...)``
launch drives configure + activate; elsewhere the node's own ``autostart`` parameter does.
``autostart:=false`` leaves it unconfigured for a lifecycle manager. Where ``ros2 launch`` is
unavailable the same node runs as a console script with the same ``--ros-args`` (see the
README).
"""

import inspect
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue


def _launch_drives_lifecycle():
    """True where launch_ros's LifecycleNode can configure + activate the node itself.

    launch_ros takes ``autostart`` as a keyword of ``Node.__init__`` that ``LifecycleNode``
    passes on through ``**kwargs`` (ros2/launch_ros#430), so every ``__init__`` the keyword
    can reach along the MRO is searched, stopping at one without ``**kwargs``.
    """
    for cls in LifecycleNode.__mro__:
        init = cls.__dict__.get('__init__')
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        if 'autostart' in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def _fusion_node(context):
    arg = LaunchConfiguration
    autostart = arg('autostart').perform(context).strip().lower() in ('true', '1', 'yes')
    common = dict(
        package='tesg_ros',
        executable='fusion_node',
        name='tesg_fusion',
        namespace=arg('namespace'),
        output='screen',
        emulate_tty=True,
        remappings=[
            ('rgb/image', arg('rgb_image_topic')),
            ('rgb/camera_info', arg('rgb_info_topic')),
            ('thermal/image', arg('thermal_image_topic')),
            ('thermal/camera_info', arg('thermal_info_topic')),
            ('fused/image', arg('output_topic')),
            ('fused/camera_info', arg('output_info_topic')),
        ],
        arguments=['--ros-args', '--log-level', arg('log_level')],
    )
    parameters = [
        arg('params_file'),
        {
            'use_sim_time': ParameterValue(arg('use_sim_time'), value_type=bool),
            'model.device': ParameterValue(arg('device'), value_type=str),
        },
    ]
    if _launch_drives_lifecycle():
        # launch sends configure + activate; the node must not also do it itself.
        return [LifecycleNode(autostart=autostart, parameters=parameters + [{'autostart': False}],
                              **common)]
    # Older launch_ros: the node self-transitions (its autostart parameter).
    return [Node(parameters=parameters + [{'autostart': autostart}], **common)]


def generate_launch_description():
    share = get_package_share_directory('tesg_ros')
    arguments = [
        ('namespace', '', 'Namespace of the node and its relative topics.'),
        ('use_sim_time', 'false', 'Use /clock (set true with "ros2 bag play --clock").'),
        ('params_file', os.path.join(share, 'config', 'fusion.yaml'),
         'Parameters YAML (defaults: share/tesg_ros/config/fusion.yaml).'),
        ('rgb_image_topic', 'rgb/image', 'RGB image input.'),
        ('rgb_info_topic', 'rgb/camera_info', 'RGB CameraInfo input.'),
        ('thermal_image_topic', 'thermal/image', 'Thermal image input.'),
        ('thermal_info_topic', 'thermal/camera_info', 'Thermal CameraInfo input.'),
        ('output_topic', 'fused/image', 'Fused image output.'),
        ('output_info_topic', 'fused/camera_info', 'Fused CameraInfo output.'),
        ('device', 'auto', 'Inference device: auto, cpu, cuda or cuda:N.'),
        ('log_level', 'info', 'Logging level of the node.'),
        ('autostart', 'true', 'Configure and activate the lifecycle node at start (false: '
                              'leave it to a lifecycle manager).'),
    ]
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, default, text in arguments]
    return LaunchDescription([
        # huggingface_hub reads these at import time: set them before the process starts.
        SetEnvironmentVariable('HF_HUB_OFFLINE', '1'),
        SetEnvironmentVariable('TRANSFORMERS_OFFLINE', '1'),
        *declared,
        OpaqueFunction(function=_fusion_node),
    ])
