# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""fusion.launch.py from a colcon install, run by the public ros2/launch and ros2/launch_ros.

Opt-in (launch and launch_ros are not on PyPI): point the variables at source checkouts.

    TESG_LAUNCH_SRC=<ros2/launch checkout>
    TESG_LAUNCH_ROS_SRCS=<ros2/launch_ros checkout>[:<another launch_ros checkout> ...]
    TESG_OSRF_PYCOMMON_SRC=<osrf/osrf_pycommon checkout>   (where osrf_pycommon is not installed)

Each launch_ros checkout is used in turn. Whether it has ``LifecycleNode(autostart=...)`` is
read from its source text (``autostart`` in ``launch_ros/actions/node.py``), independently of
the launch file's own detection; with it, launch must drive configure + activate (lifecycle
transitions seen by launch, and ``ChangeState`` events bring up a node launched with
``autostart:=false``), without it the node activates itself. Each run starts the real
node (model loaded on the CPU). docs/node.md "Checked against upstream" records a run.
"""

import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_ROS_SRCS = [Path(p) for p in os.environ.get('TESG_LAUNCH_ROS_SRCS', '').split(os.pathsep)
                   if p]


def _source_path(variable, marker):
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f'{variable} is not set (upstream sources, see this module)')
    path = Path(value)
    if not (path / marker).is_file():
        pytest.skip(f'{variable}={value} has no {marker}')
    return path


def _has_autostart(launch_ros_root):
    node = launch_ros_root / 'launch_ros' / 'launch_ros' / 'actions' / 'node.py'
    return 'autostart' in node.read_text(encoding='utf-8')


def _separate_autostart_transitions(launch_ros_root):
    lifecycle_node = launch_ros_root / 'launch_ros' / 'launch_ros' / 'actions' / \
        'lifecycle_node.py'
    return lifecycle_node.read_text(encoding='utf-8').count('LifecycleTransition(') >= 2


@pytest.fixture(scope='module')
def colcon_install(tmp_path_factory):
    colcon = shutil.which('colcon')
    if colcon is None or shutil.which('git') is None:
        pytest.skip('colcon or git not available')
    workspace = tmp_path_factory.mktemp('ws')
    tracked = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split('\0')
    src = workspace / 'src' / 'tesg_ros'
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    result = subprocess.run([colcon, 'build', '--base-paths', 'src'], cwd=workspace,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workspace / 'install' / 'tesg_ros'


def run_probe(prefix, launch_ros_root, timeout_s, *launch_arguments):
    launch_src = _source_path('TESG_LAUNCH_SRC', 'launch/launch/__init__.py')
    paths = [launch_src / 'launch', launch_ros_root / 'launch_ros']
    pycommon = os.environ.get('TESG_OSRF_PYCOMMON_SRC')
    if pycommon:
        paths.append(Path(pycommon))
    paths += list((prefix / 'lib').glob('python3*/site-packages'))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix),
               PYTHONPATH=os.pathsep.join(str(p) for p in paths))
    result = subprocess.run(
        [sys.executable, str(ROOT / 'test' / 'launch_probe.py'), str(timeout_s),
         *launch_arguments],
        cwd=prefix, env=env, capture_output=True, text=True, timeout=timeout_s + 120)
    lines = [line for line in result.stdout.splitlines() if line.startswith('LAUNCH_PROBE ')]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(lines[-1][len('LAUNCH_PROBE '):])
    print(launch_ros_root.name, ' '.join(launch_arguments), json.dumps(report))  # for -s runs
    assert report['launch_ros'].startswith(str(launch_ros_root)), json.dumps(report)
    assert report['launch_file'].startswith(str(prefix)), json.dumps(report)
    return report


@pytest.mark.timeout(900)
@pytest.mark.parametrize('launch_ros_root', LAUNCH_ROS_SRCS or [None],
                         ids=[p.name for p in LAUNCH_ROS_SRCS] or ['unset'])
def test_launch_file_activates_the_node_under_this_launch_ros(request, launch_ros_root):
    if launch_ros_root is None:
        pytest.skip('TESG_LAUNCH_ROS_SRCS is not set (upstream sources, see this module)')
    if not (launch_ros_root / 'launch_ros' / 'launch_ros' / '__init__.py').is_file():
        pytest.skip(f'{launch_ros_root} is not a ros2/launch_ros checkout')
    _source_path('TESG_LAUNCH_SRC', 'launch/launch/__init__.py')
    report = run_probe(request.getfixturevalue('colcon_install'), launch_ros_root, 240)
    if _has_autostart(launch_ros_root):
        assert report['drives_lifecycle'] is True, json.dumps(report)
        assert report['created'] == ['LifecycleNode'], json.dumps(report)
        # launch configured it (the node's own autostart parameter is False on this path)
        # and saw the transitions.
        assert report['transitions'][:2] == ['unconfigured->configuring',
                                             'configuring->inactive'], json.dumps(report)
        if report['ended_by'] != 'lifecycle active':
            # launch_ros as of pull request #430 sends configure and activate as two
            # independent LifecycleTransition actions: activate can reach the node first and
            # be refused. Released launch_ros chains them in one action.
            assert report['ended_by'] == 'stayed inactive', json.dumps(report)
            assert _separate_autostart_transitions(launch_ros_root), json.dumps(report)
        else:
            assert report['transitions'][-1] == 'activating->active', json.dumps(report)
    else:
        assert report['engine_ready'], json.dumps(report)
        assert report['drives_lifecycle'] is False, json.dumps(report)
        assert report['created'] == ['Node'], json.dumps(report)
        assert report['transitions'] == [], report  # the node activated itself
        assert report['ended_by'] == 'engine ready', json.dumps(report)


@pytest.mark.timeout(900)
def test_autostart_false_leaves_the_node_to_a_lifecycle_manager(request):
    with_autostart = [root for root in LAUNCH_ROS_SRCS if _has_autostart(root)]
    if not with_autostart:
        pytest.skip('no launch_ros checkout with LifecycleNode(autostart=...) in '
                    'TESG_LAUNCH_ROS_SRCS')
    _source_path('TESG_LAUNCH_SRC', 'launch/launch/__init__.py')
    prefix = request.getfixturevalue('colcon_install')
    report = run_probe(prefix, with_autostart[0], 30, 'autostart:=false')
    assert report['created'] == ['LifecycleNode'], json.dumps(report)
    assert report['transitions'] == [] and not report['engine_ready'], json.dumps(report)
    assert report['ended_by'] == 'timeout', json.dumps(report)
    # A lifecycle manager using launch's ChangeState events brings it up.
    report = run_probe(prefix, with_autostart[0], 240, '--manage', 'autostart:=false')
    assert report['transitions'] == [
        'unconfigured->configuring', 'configuring->inactive', 'inactive->activating',
        'activating->active'], json.dumps(report)
    assert report['ended_by'] == 'lifecycle active', json.dumps(report)
