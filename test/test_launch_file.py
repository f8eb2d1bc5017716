# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""launch/fusion.launch.py: the arguments users rely on, and the relative topic remaps.

``launch``/``launch_ros`` are not installable from PyPI, so the file is checked statically
here; where they are importable (a real ROS install) the description is also built.
"""

import ast
import importlib.util

import pytest

from tesg_ros.paths import share_path

LAUNCH_FILE = share_path('launch', 'fusion.launch.py')
REQUIRED_ARGUMENTS = {'namespace', 'use_sim_time', 'params_file', 'rgb_image_topic',
                      'rgb_info_topic', 'thermal_image_topic', 'thermal_info_topic',
                      'output_topic', 'device', 'log_level', 'autostart'}
REMAPPED_TOPICS = {'rgb/image', 'rgb/camera_info', 'thermal/image', 'thermal/camera_info',
                   'fused/image', 'fused/camera_info'}


def _string_tuples(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and node.elts and isinstance(node.elts[0], ast.Constant):
            yield tuple(getattr(e, 'value', None) for e in node.elts)


def test_launch_file_declares_the_arguments_and_remaps_relative_topics():
    tree = ast.parse(LAUNCH_FILE.read_text(encoding='utf-8'))
    tuples = list(_string_tuples(tree))
    declared = {t[0] for t in tuples if len(t) == 3}
    assert REQUIRED_ARGUMENTS <= declared, REQUIRED_ARGUMENTS - declared
    remapped = {t[0] for t in tuples if len(t) == 2}
    assert REMAPPED_TOPICS <= remapped
    assert all(not topic.startswith('/') for topic in REMAPPED_TOPICS)
    source = LAUNCH_FILE.read_text(encoding='utf-8')
    assert "executable='fusion_node'" in source
    assert 'value_type=bool' in source, 'use_sim_time must be passed as a typed bool'


def test_launch_file_starts_a_lifecycle_node_that_is_activated_exactly_once():
    """launch_ros's LifecycleNode(autostart=...) where it exists, else the node's own autostart.

    Both at once would send configure twice; so the LifecycleNode branch passes the node
    parameter autostart: False and the plain-Node branch passes the launch argument.
    """
    tree = ast.parse(LAUNCH_FILE.read_text(encoding='utf-8'))
    calls = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            calls.setdefault(node.func.id, []).append(node)
    (lifecycle_call,) = calls['LifecycleNode']
    keywords = {k.arg: k.value for k in lifecycle_call.keywords}
    assert isinstance(keywords['autostart'], ast.Name), 'autostart must be the evaluated bool'
    node_parameters = {}
    for call in calls['LifecycleNode'] + calls['Node']:
        parameters = {k.arg: k.value for k in call.keywords}['parameters']
        dicts = [n for n in ast.walk(parameters) if isinstance(n, ast.Dict)]
        node_parameters[call.func.id] = {
            key.value: value for d in dicts for key, value in zip(d.keys, d.values)
            if isinstance(key, ast.Constant) and key.value == 'autostart'}
    assert isinstance(node_parameters['LifecycleNode']['autostart'], ast.Constant)
    assert node_parameters['LifecycleNode']['autostart'].value is False
    assert isinstance(node_parameters['Node']['autostart'], ast.Name)


def test_launch_description_builds_where_launch_is_installed():
    if importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch_ros is not installed (no ROS 2 install on this machine)')
    spec = importlib.util.spec_from_file_location('fusion_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {getattr(e, 'name', None) for e in description.entities}
    assert REQUIRED_ARGUMENTS <= names


def _detection_function():
    """``_launch_drives_lifecycle`` from the launch file, bound to a given LifecycleNode."""
    tree = ast.parse(LAUNCH_FILE.read_text(encoding='utf-8'))
    (function,) = [node for node in tree.body if isinstance(node, ast.FunctionDef)
                   and node.name == '_launch_drives_lifecycle']
    module = ast.Module(body=[function], type_ignores=[])

    def bind(lifecycle_node_class):
        import inspect
        namespace = {'inspect': inspect, 'LifecycleNode': lifecycle_node_class}
        exec(compile(module, str(LAUNCH_FILE), 'exec'), namespace)
        return namespace['_launch_drives_lifecycle']()
    return bind


class _Action:
    def __init__(self, *, condition=None):
        self.condition = condition


class _ExecuteProcess(_Action):
    def __init__(self, *, cmd, **kwargs):
        super().__init__(**kwargs)


def test_lifecycle_detection_follows_autostart_through_kwargs():
    """The constructor shapes of ros2/launch_ros without and with pull request #430."""
    detect = _detection_function()

    class PlainNode(_ExecuteProcess):
        def __init__(self, *, executable, package=None, name=None, parameters=None, **kwargs):
            super().__init__(cmd=[executable], **kwargs)

    class PlainLifecycleNode(PlainNode):
        def __init__(self, *, name, namespace, **kwargs):
            super().__init__(name=name, **kwargs)

    class AutostartNode(_ExecuteProcess):
        def __init__(self, *, executable, package=None, name=None, parameters=None,
                     autostart=False, **kwargs):
            super().__init__(cmd=[executable], **kwargs)

    class AutostartLifecycleNode(AutostartNode):
        def __init__(self, *, name, namespace, **kwargs):
            super().__init__(name=name, **kwargs)

    class ExplicitLifecycleNode(PlainNode):
        def __init__(self, *, name, namespace, autostart=False, **kwargs):
            super().__init__(name=name, **kwargs)

    assert detect(PlainLifecycleNode) is False
    assert detect(AutostartLifecycleNode) is True
    assert detect(ExplicitLifecycleNode) is True
