# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""``tesg-train``: train the TeSG fusion network from a YAML config.

    tesg-train --config config/train.yaml --set optim.lr=5e-4 --set train.max_steps=2000
    tesg-train --config config/train.yaml --resume            # newest checkpoint of run_dir
    torchrun --nproc_per_node 2 -m tesg_ros.cli.train --config config/train.yaml

Anything after ``--ros-args`` (added by ``ros2 run``) is ignored.
"""

import argparse
import logging
import sys

from tesg_ros.errors import TesgError
from tesg_ros.cli import strip_ros_args


def build_parser():
    """The argparse parser of ``tesg-train``."""
    parser = argparse.ArgumentParser(
        prog='tesg-train', description='Train the TeSG infrared/visible fusion network.')
    parser.add_argument('--config', default=None,
                        help='YAML config (default: the package share config/train.yaml)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='override a config value, e.g. --set optim.lr=5e-4 (repeatable)')
    parser.add_argument('--resume', nargs='?', const='latest', default=None, metavar='CHECKPOINT',
                        help='continue from a checkpoint directory, or the newest one in '
                             'run_dir when no path is given')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm progress bar')
    return parser


def main(argv=None):
    """Entry point; returns the process exit code (0 ok, 2 bad configuration or data)."""
    argv = strip_ros_args(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from tesg_ros.training.trainer import load_config, train
    config_path = args.config
    if config_path is None:
        from tesg_ros.paths import share_path
        config_path = share_path('config', 'train.yaml')
    try:
        config = load_config(config_path, args.overrides)
        result = train(config, progress=not args.no_progress, resume=args.resume)
    except TesgError as error:
        logging.getLogger('tesg_ros.training').error('%s', error)
        print(f'tesg-train: error: {error}', file=sys.stderr)
        return 2
    if result.rank != 0:
        return 0
    if result.best_value is not None:
        print(f'tesg-train: finished at step {result.step}; best '
              f'{config.validation.best_key} = {result.best_value:.5g} -> {result.export_path}')
    else:
        print(f'tesg-train: finished at step {result.step}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
