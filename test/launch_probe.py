# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Run the installed fusion.launch.py under whatever launch/launch_ros is on PYTHONPATH.

Used by test/test_launch_upstream.py in a subprocess (the PYTHONPATH picks the launch_ros
version). Prints one JSON line: launch_ros's path, whether the launch file chose the
LifecycleNode path, the action it created, the lifecycle transitions launch saw, whether the
node reported its engine ready, and why the launch ended.

    python test/launch_probe.py TIMEOUT_S [--manage] [launch arguments name:=value ...]

``--manage``: act as a lifecycle manager through launch's ``ChangeState`` events (configure
once the process starts, activate once it is inactive). Otherwise a node left inactive for
30 s ends the run ('stayed inactive').
"""

import importlib.util
import json
import sys
import types


def _composition_interfaces_placeholder():
    """launch_ros imports composition_interfaces at module level for LoadComposableNodes only;
    where its message package is not installed, stand in with a module whose services refuse
    to be used (this launch file has no composable nodes)."""
    if importlib.util.find_spec('composition_interfaces') is not None:
        return False

    class _Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError('composition_interfaces is not installed here')

    srv = types.ModuleType('composition_interfaces.srv')
    for name in ('LoadNode', 'UnloadNode', 'ListNodes'):
        service = type(name, (), {'Request': _Unavailable, 'Response': _Unavailable})
        setattr(srv, name, service)
    package = types.ModuleType('composition_interfaces')
    package.srv = srv
    sys.modules['composition_interfaces'] = package
    sys.modules['composition_interfaces.srv'] = srv
    return True


def main():
    timeout = float(sys.argv[1])
    manage = '--manage' in sys.argv[2:]
    launch_arguments = [tuple(arg.split(':=', 1)) for arg in sys.argv[2:] if ':=' in arg]
    placeholder = _composition_interfaces_placeholder()

    from ament_index_python.packages import get_package_share_directory
    import launch
    from launch.actions import (EmitEvent, IncludeLaunchDescription, RegisterEventHandler,
                                TimerAction)
    from launch.event_handlers import OnProcessExit, OnProcessIO, OnProcessStart
    from launch.events import Shutdown
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    import launch_ros
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    path = get_package_share_directory('tesg_ros') + '/launch/fusion.launch.py'
    spec = importlib.util.spec_from_file_location('fusion_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # The action the launch file's OpaqueFunction creates, with the default arguments.
    context = launch.LaunchContext()
    for entity in module.generate_launch_description().entities:
        if isinstance(entity, launch.actions.DeclareLaunchArgument):
            entity.visit(context)
    for name, value in launch_arguments:
        context.launch_configurations[name] = value
    created = [type(action).__name__ for action in module._fusion_node(context)]
    report = {
        'launch_ros': launch_ros.__file__, 'launch': launch.__file__, 'launch_file': path,
        'composition_interfaces_placeholder': placeholder,
        'drives_lifecycle': module._launch_drives_lifecycle(),
        'created': created, 'managed': manage, 'change_state_sent': [], 'transitions': [],
        'engine_ready': False, 'ended_by': None,
    }

    def change_state(transition_id):
        report['change_state_sent'].append(transition_id)
        return EmitEvent(event=ChangeState(
            lifecycle_node_matcher=lambda action: isinstance(action, LifecycleNode),
            transition_id=transition_id))

    def on_transition(context):
        event = context.locals.event
        report['transitions'].append(f'{event.start_state}->{event.goal_state}')
        if event.goal_state == 'active':
            report['ended_by'] = report['ended_by'] or 'lifecycle active'
            return [EmitEvent(event=Shutdown(reason='lifecycle active'))]
        if event.start_state == 'configuring' and event.goal_state == 'inactive':
            if manage:
                return [change_state(Transition.TRANSITION_ACTIVATE)]
            return [TimerAction(period=30.0, actions=[record_shutdown('stayed inactive')])]

    def on_start(event, context):
        if manage:
            return [change_state(Transition.TRANSITION_CONFIGURE)]

    def on_output(event):
        text = event.text.decode(errors='replace')
        if 'fusion engine ready' in text:
            report['engine_ready'] = True
            if not report['drives_lifecycle']:
                report['ended_by'] = report['ended_by'] or 'engine ready'
                return [EmitEvent(event=Shutdown(reason='engine ready'))]

    def on_exit(event, context):
        report['ended_by'] = report['ended_by'] or f'node exited with {event.returncode}'

    def record_shutdown(reason):
        def action(context):
            report['ended_by'] = report['ended_by'] or reason
            return [EmitEvent(event=Shutdown(reason=reason))]
        return launch.actions.OpaqueFunction(function=action)

    description = launch.LaunchDescription([
        RegisterEventHandler(OnStateTransition(
            entities=[launch.actions.OpaqueFunction(function=on_transition)])),
        RegisterEventHandler(OnProcessIO(on_stdout=on_output, on_stderr=on_output)),
        RegisterEventHandler(OnProcessExit(on_exit=on_exit)),
        RegisterEventHandler(OnProcessStart(on_start=on_start)),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path),
                                 launch_arguments=launch_arguments),
        TimerAction(period=timeout, actions=[record_shutdown('timeout')]),
    ])
    service = launch.LaunchService(argv=[])
    service.include_launch_description(description)
    report['returncode'] = service.run()
    print('LAUNCH_PROBE ' + json.dumps(report), flush=True)


if __name__ == '__main__':
    main()
