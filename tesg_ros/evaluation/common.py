# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Names shared by the evaluation run (:mod:`.evaluate`) and its report (:mod:`.report`).

Kept apart so that the report imports no part of the run (no import cycle).
"""

BASELINES = ('ir', 'visible', 'average')
METHODS = ('model',) + BASELINES
METHOD_TITLES = {'model': 'TeSG model', 'ir': 'IR copy', 'visible': 'visible copy',
                 'average': 'pixel average'}
STAGES = ('normalise', 'register', 'semantics', 'network', 'colour', 'total')
# Metrics where a smaller value is better (the report marks the best value per row).
LOWER_IS_BETTER = frozenset({'CE', 'RMSE', 'Qcv', 'Nabf', 'Blotch'})
# Mean absolute difference (grey levels, 0-255) between 64 x 64 grey thumbnails of
# consecutive visible frames above which the second frame starts a new scene. Consecutive
# video frames differ by a few levels; a cut between scenes by tens.
SCENE_CHANGE_LEVELS = 30.0
