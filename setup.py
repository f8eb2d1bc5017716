# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""ament_python packaging: colcon installs share files under share/tesg_ros."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE_NAME = 'tesg_ros'
SHARE = os.path.join('share', PACKAGE_NAME)


def share_files(folder, pattern='*'):
    """Install every file of ``folder`` (non-recursive) under share/tesg_ros/folder."""
    files = [f for f in glob(os.path.join(folder, pattern)) if os.path.isfile(f)]
    return (os.path.join(SHARE, folder), files)


setup(
    name=PACKAGE_NAME,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*', 'bench', 'bench.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE_NAME]),
        (SHARE, ['package.xml']),
        share_files('launch'),
        share_files('config'),
        share_files('model'),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='tesg_ros maintainers',
    maintainer_email='maintainers@tesg-ros.invalid',
    description='Thermal + RGB image fusion guided by textual semantics (TeSG) for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'fusion_node = tesg_ros.ros.fusion_node:main',
            'tesg-compute-homography = tesg_ros.cli.compute_homography:main',
            'tesg-make-bag = tesg_ros.cli.make_bag:main',
            'tesg-eval = tesg_ros.cli.eval:main',
            'tesg-replay = tesg_ros.cli.replay:main',
            'tesg-train = tesg_ros.cli.train:main',
            'tesg-export = tesg_ros.cli.export:main',
        ],
    },
)
