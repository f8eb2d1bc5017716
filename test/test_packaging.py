# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Packaging: package.xml (format 3, runtime keys); colcon installs share files and scripts."""

import os
from pathlib import Path
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_package_xml_is_format_3_with_runtime_dependencies():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'tesg_ros'
    assert root.find('export/build_type').text == 'ament_python'
    exec_deps = {e.text for e in root.findall('exec_depend')}
    for key in ['rclpy', 'sensor_msgs', 'std_msgs', 'diagnostic_msgs', 'message_filters',
                'cv_bridge', 'launch', 'launch_ros', 'python3-numpy', 'python3-opencv',
                'python3-yaml', 'python3-torch', 'python3-transformers-pip']:
        assert key in exec_deps, f'package.xml lacks <exec_depend>{key}</exec_depend>'


ROSDISTRO = ROOT / 'test' / 'data' / 'rosdistro'
DEPEND_TAGS = ('depend', 'build_depend', 'build_export_depend', 'buildtool_depend',
               'buildtool_export_depend', 'exec_depend', 'test_depend', 'doc_depend')


def test_every_package_xml_key_exists_in_rosdistro():
    """rosdep resolves a key as a released ROS package (kilted/distribution.yaml) or a rosdep key.

    The excerpts in test/data/rosdistro are verbatim lines of ros/rosdistro (commit named in
    their headers); a key in neither makes ``rosdep install`` fail for every user.
    """
    import yaml
    rosdep_keys = yaml.safe_load((ROSDISTRO / 'rosdep_python.yaml').read_text(encoding='utf-8'))
    ros_packages = yaml.safe_load(
        (ROSDISTRO / 'kilted_packages.yaml').read_text(encoding='utf-8'))
    root = ET.parse(ROOT / 'package.xml').getroot()
    keys = {e.text.strip() for tag in DEPEND_TAGS for e in root.findall(tag)}
    assert keys
    unknown = sorted(k for k in keys if k not in rosdep_keys and k not in ros_packages)
    assert not unknown, f'package.xml keys not in ros/rosdistro: {unknown}'
    for key in keys & set(rosdep_keys):
        rules = rosdep_keys[key]
        assert 'ubuntu' in rules or '*' in rules, f'{key} has no Ubuntu rule'


def tracked_files():
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split('\0') if p]


@pytest.mark.timeout(300)
def test_colcon_build_installs_share_files_and_scripts(tmp_path):
    colcon = shutil.which('colcon')
    if colcon is None or shutil.which('git') is None:
        pytest.skip('colcon or git not available')
    src = tmp_path / 'src' / 'tesg_ros'
    for rel in tracked_files():
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    result = subprocess.run([colcon, 'build', '--base-paths', 'src'], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    prefix = tmp_path / 'install' / 'tesg_ros'
    share = prefix / 'share' / 'tesg_ros'
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    assert (index / 'tesg_ros').is_file()
    assert (share / 'package.xml').is_file()
    tracked = tracked_files()
    for folder in ['launch', 'config', 'model']:
        expected = sorted(Path(rel).name for rel in tracked if Path(rel).parent == Path(folder))
        installed = sorted(p.name for p in (share / folder).iterdir())
        assert installed == expected, folder
        assert expected, f'nothing tracked in {folder}/'
    scripts = {p.name for p in (prefix / 'lib' / 'tesg_ros').iterdir()}
    assert 'tesg-compute-homography' in scripts

    # The installed package finds its share directory through the ament index, not the cwd.
    site = next((prefix / 'lib').glob('python3*/site-packages'))
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), PYTHONPATH=str(site))
    probe = subprocess.run(
        [sys.executable, '-c',
         'import tesg_ros.paths as p; print(p.__file__); print(p.share_dir())'],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    module_file, share_dir = probe.stdout.split()
    assert module_file.startswith(str(site)), 'imported the source tree instead of the install'
    assert Path(share_dir) == share
