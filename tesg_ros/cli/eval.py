# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``tesg-eval BAG``: replay a rosbag2 through the fusion offline and write a report.

Exit status: 0 when at least one frame was evaluated (problems, if any, are printed and in
the report), 1 when nothing could be evaluated (the report says why), 2 for bad arguments.
Arguments after ``--ros-args`` are ignored so ``ros2 run`` works.

Example::

    tesg-eval recording/ --out eval_run1 --weights model/tesg_fusion.safetensors \\
        --set sync.slop=0.03 --semantics live --semantics-every 30
"""

import argparse
from pathlib import Path
import shlex
import sys

import yaml

from tesg_ros import bags
from tesg_ros.cli import strip_ros_args
from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.evaluation.evaluate import evaluate_bag
from tesg_ros.evaluation.semantics import DEPRECATED_SEMANTICS, SEMANTICS_MODES
from tesg_ros.metrics import CONVENTIONS


def parse_assignment(text):
    """``name=value`` -> ``(name, value)``; the value is read as YAML (0.1, true, [1, 2])."""
    name, separator, value = text.partition('=')
    name = name.strip()
    if not separator or not name:
        raise argparse.ArgumentTypeError(f'expected name=value, got {text!r}')
    try:
        parsed = yaml.safe_load(value) if value.strip() else ''
    except yaml.YAMLError as error:
        raise argparse.ArgumentTypeError(f'{name}: cannot read value {value!r}: '
                                         f'{error}') from None
    return name, parsed


def build_parser():
    """The argparse parser of ``tesg-eval``."""
    parser = argparse.ArgumentParser(
        prog='tesg-eval',
        description=('Fuse a rosbag2 offline with the pairing and engine of the node, score '
                     'the model against IR / visible / average baselines and write a report.'))
    parser.add_argument('bag', help='rosbag2 directory, or a .mcap / .db3 file')
    parser.add_argument('--out', default=None,
                        help='output directory, created; must be new or empty '
                             '(default: ./<bag name>_eval)')
    parser.add_argument('--thermal-topic', default=None, help='default: auto-detected')
    parser.add_argument('--rgb-topic', default=None, help='default: auto-detected')
    parser.add_argument('--semantics', choices=SEMANTICS_MODES + tuple(DEPRECATED_SEMANTICS),
                        default=None,
                        help='replay the recorded semantics topic, compute them (live, '
                             'synchronously) or fuse without (disabled; off is deprecated); '
                             'default: replay when recorded, else live')
    parser.add_argument('--semantics-topic', default=None,
                        help='std_msgs/String topic to replay (default: the .../semantics one)')
    parser.add_argument('--semantics-every', type=int, default=None, metavar='N',
                        help='live semantics: describe every N pairs (default: every '
                             'semantics.period seconds of bag time)')
    parser.add_argument('--params-file', default=None,
                        help='ROS 2 parameters YAML of the fusion node')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        type=parse_assignment, metavar='NAME=VALUE',
                        help='override one node parameter (repeatable), e.g. sync.slop=0.03')
    parser.add_argument('--weights', default=None,
                        help='fusion-net .safetensors (default: model.weights, else the '
                             'shipped model/tesg_fusion.safetensors)')
    parser.add_argument('--out-storage', choices=bags.STORAGES, default=None,
                        help='storage of the output bag (default: as the input)')
    parser.add_argument('--write-registered', action='store_true',
                        help='also write the registered thermal image to '
                             '/fused/thermal_registered')
    parser.add_argument('--no-copy-inputs', dest='copy_inputs', action='store_false',
                        help='do not copy the input topics into the output bag')
    parser.add_argument('--max-frames', type=int, default=None, metavar='N',
                        help='stop after N fused frames')
    parser.add_argument('--convention', choices=CONVENTIONS, default='common',
                        help='metric convention (default common: 8-bit grey, MI in bits)')
    parser.add_argument('--score-every', type=int, default=1, metavar='N',
                        help='compute the metrics on every N-th fused frame only (default 1)')
    parser.add_argument('--montage-frames', type=int, default=4, metavar='N',
                        help='frames shown as image montages in the report (default 4)')
    parser.add_argument('--detector', default=None,
                        help='run a detector on the model output and every baseline: hog, or '
                             'a local transformers object-detection model directory')
    parser.add_argument('--detector-threshold', type=float, default=0.5, metavar='P',
                        help='score threshold of a transformers detector (default 0.5)')
    parser.add_argument('--detector-device', default='cpu',
                        help='device of a transformers detector: cpu, cuda, cuda:N')
    parser.add_argument('--detector-trust-remote-code', action='store_true',
                        help='run Python code shipped in the --detector model directory')
    parser.add_argument('--labels', default=None,
                        help='ground truth for --detector: COCO JSON or YOLO label directory; '
                             'images are named by the RGB stamp in ns (<stamp>.png / .txt)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return parser


def _print_outcome(result):
    print(f'tesg-eval: {result.status}: {len(result.frames)} frame(s) evaluated in '
          f'{result.elapsed_s:.1f} s')
    if result.error:
        print(f'tesg-eval: error: {result.error}', file=sys.stderr)
    for problem in result.problems:
        print(f'tesg-eval: warning: {problem}', file=sys.stderr)
    model = result.summary.get('model') if result.frames else None
    if model:
        shown = ', '.join(f'{name} {model[name]["mean"]:.4g}'
                          for name in ('EN', 'SF', 'MI', 'Qabf', 'SSIM', 'VIF'))
        print(f'model means: {shown}')
    print(f'report: {result.files["report_html"]}')
    print(f'        {result.files["report_md"]}')


def main(argv=None):
    """Entry point; returns the exit status (0 evaluated, 1 nothing evaluated, 2 usage)."""
    raw = sys.argv[1:] if argv is None else list(argv)
    argv = strip_ros_args(raw)
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path.cwd() / f'{Path(args.bag).name}_eval'
    command_line = ' '.join(shlex.quote(part) for part in ['tesg-eval'] + argv)
    try:
        result = evaluate_bag(
            args.bag, out, thermal_topic=args.thermal_topic, rgb_topic=args.rgb_topic,
            semantics=args.semantics, semantics_topic=args.semantics_topic,
            semantics_every=args.semantics_every, params_file=args.params_file,
            overrides=dict(args.overrides), weights=args.weights,
            out_storage=args.out_storage, write_registered=args.write_registered,
            copy_inputs=args.copy_inputs, max_frames=args.max_frames,
            convention=args.convention, score_every=args.score_every,
            montage_frames=args.montage_frames,
            detector=args.detector, detector_threshold=args.detector_threshold,
            detector_device=args.detector_device,
            detector_trust_remote_code=args.detector_trust_remote_code, labels=args.labels,
            progress=not args.no_progress,
            command_line=command_line)
    except ConfigError as error:
        print(f'tesg-eval: error: {error}', file=sys.stderr)
        return 2
    except (TesgError, OSError) as error:  # OSError: the output could not be written
        print(f'tesg-eval: error: {error}', file=sys.stderr)
        return 1
    _print_outcome(result)
    return result.exit_code


if __name__ == '__main__':
    sys.exit(main())
