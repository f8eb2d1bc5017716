# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Console script ``tesg-replay BAG``: live replay of a rosbag through the fusion node over
DDS (:mod:`tesg_ros.replay`, docs/replay.md)."""

import argparse
import math
import sys


from tesg_ros import bags
from tesg_ros.errors import TesgError
from tesg_ros.node_params import NODE_NAME
from tesg_ros.replay import EXIT_ERROR, EXIT_INTERRUPTED, SEMANTICS_MODES
from tesg_ros.ros.live_replay import replay
from tesg_ros.cli import split_ros_args


# ---------------------------------------------------------------------------- main
def build_parser():
    parser = argparse.ArgumentParser(
        prog='tesg-replay',
        description='Replay a rosbag live (with /clock) through the fusion node, record the '
                    'fused output and report latency and drops. Arguments after --ros-args '
                    'go to rclpy (e.g. -p model.device:=cpu, --params-file FILE).')
    parser.add_argument('bag', help='rosbag2 directory, .mcap or .db3 file')
    parser.add_argument('--out', default=None,
                        help='new or empty folder for the fused bag and the report '
                             '(default: <bag>_replay_<date-time>)')
    parser.add_argument('--storage', choices=bags.STORAGES, default='mcap',
                        help='storage of the output bag (default mcap)')
    parser.add_argument('--rate', type=float, default=1.0,
                        help='replay speed factor: 2 plays twice as fast (default 1)')
    parser.add_argument('--loop', type=int, default=1,
                        help='play the bag N times; later passes are shifted in time')
    parser.add_argument('--thermal-topic', default=None, help='default: detected')
    parser.add_argument('--rgb-topic', default=None, help='default: detected')
    parser.add_argument('--thermal-info-topic', default=None,
                        help='default: camera_info beside the thermal image topic')
    parser.add_argument('--rgb-info-topic', default=None,
                        help='default: camera_info beside the RGB image topic')
    parser.add_argument('--no-camera-info', action='store_true',
                        help='do not replay CameraInfo topics')
    parser.add_argument('--semantics', choices=SEMANTICS_MODES, default=None,
                        help='semantics.mode of the in-process node; replay also publishes '
                             "the bag's recorded semantics (latched) on 'semantics'")
    parser.add_argument('--semantics-topic', default=None,
                        help='recorded semantics topic (default: the String topic named '
                             '.../semantics)')
    parser.add_argument('--weights', default=None, help='model.weights of the in-process node')
    parser.add_argument('--params-file', default=None,
                        help='ROS 2 parameters YAML for the in-process node')
    parser.add_argument('--set', dest='set_values', action='append', default=[],
                        metavar='NAME=VALUE', help='a node parameter (repeatable)')
    parser.add_argument('--external', action='store_true',
                        help='replay into an already running fusion node (only publish and '
                             'record)')
    parser.add_argument('--node-name', default='/' + NODE_NAME,
                        help=f'the external node, for its parameters and diagnostics '
                             f'(default /{NODE_NAME})')
    parser.add_argument('--progress', dest='progress', action='store_true', default=None,
                        help='progress bar on stderr (default: when stderr is a terminal)')
    parser.add_argument('--no-progress', dest='progress', action='store_false')
    parser.add_argument('--no-warmup', action='store_true',
                        help='start at once instead of waiting for a first fused frame')
    parser.add_argument('--warmup-timeout', type=float, default=60.0,
                        help='seconds to wait for the first fused frame (default 60)')
    parser.add_argument('--drain-timeout', type=float, default=3.0,
                        help='after the bag, stop when no fused frame came for this long '
                             '(default 3 s)')
    parser.add_argument('--discovery-timeout', type=float, default=10.0,
                        help='seconds to wait for the subscriptions of the node (default 10)')
    return parser


def _check_options(options, parser):
    if not options.rate > 0 or not math.isfinite(options.rate):
        parser.error(f'--rate must be a positive number, got {options.rate}')
    if options.loop < 1:
        parser.error(f'--loop must be >= 1, got {options.loop}')
    for name in ('warmup_timeout', 'drain_timeout', 'discovery_timeout'):
        if not getattr(options, name) > 0:
            parser.error(f'--{name.replace("_", "-")} must be positive')
    if options.external:
        own = [flag for flag, value in (('--weights', options.weights),
                                        ('--params-file', options.params_file),
                                        ('--set', options.set_values)) if value]
        if options.semantics not in (None, 'replay'):
            own.append(f'--semantics {options.semantics}')
        if own:
            parser.error(f'{", ".join(own)} configure the in-process node; with --external '
                         'set them on the running node')


def main(argv=None):
    """Console script ``tesg-replay``; returns 0 (ok), 1 (no fused frame), 2 (error) or 130
    (interrupted; the report is still written)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    own, ros_args = split_ros_args(argv)
    parser = build_parser()
    options = parser.parse_args(own)
    _check_options(options, parser)
    command = 'tesg-replay ' + ' '.join(argv)
    try:
        report, status = replay(options, ros_args, command)
    except TesgError as error:
        print(f'tesg-replay: error: {error}', file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print('tesg-replay: interrupted (before the report was written)', file=sys.stderr)
        return EXIT_INTERRUPTED
    result = report['result']
    drop = result['drop_rate']
    latency = result['latency_ms']
    print(f'tesg-replay: {report["published"].get("rgb", 0)} RGB + '
          f'{report["published"].get("thermal", 0)} thermal images published, '
          f'{result["input_pairs"]} input pairs, {result["fused_received"]} fused frames, '
          f'drop rate {"n/a" if drop is None else f"{drop:.1%}"}'
          + (f', latency p50 {latency["p50"]:.1f} / p90 {latency["p90"]:.1f} / p99 '
             f'{latency["p99"]:.1f} ms' if latency['count'] else '')
          + (' (interrupted)' if report['interrupted'] else ''))
    print(f'tesg-replay: fused output bag: {report["output_bag"]}')
    print(f'tesg-replay: report: {report["report_files"][0]} and {report["report_files"][1]}')
    return status


if __name__ == '__main__':
    sys.exit(main())
