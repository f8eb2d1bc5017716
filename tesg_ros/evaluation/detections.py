# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""The evaluation's optional detector: built from ``--detector``, run on the model output and
on every baseline of each fused frame, scored per method (AP50 against ``--labels`` when the
frames are labelled, else counts). The detectors themselves are :mod:`tesg_ros.detection`."""

from pathlib import Path

from tesg_ros.errors import ConfigError, TesgError
from tesg_ros.evaluation.common import METHODS


def make_detector(spec, threshold=0.5, device='cpu', trust_remote_code=False):
    """'hog' -> HogPeopleDetector; a directory -> TransformersDetector; None -> None.

    threshold / device / trust_remote_code apply to a transformers detector only.
    """
    if spec is None:
        return None
    from tesg_ros import detection

    if spec == 'hog':
        return detection.HogPeopleDetector()
    if not Path(spec).is_dir():
        raise ConfigError(f'detector must be "hog" or a local transformers object-detection '
                          f'model directory, got {spec!r}')
    return detection.TransformersDetector(spec, threshold=threshold, device=device,
                                          trust_remote_code=trust_remote_code,
                                          parameter='--detector')


def _yolo_class_names(label_dir):
    for folder in (label_dir, label_dir.parent):
        for name in ('classes.txt', 'data.yaml', 'dataset.yaml'):
            if (folder / name).is_file():
                return folder / name
    raise ConfigError(f'yolo labels: no classes.txt, data.yaml or dataset.yaml in '
                      f'{label_dir} or its parent to name the classes')


class FrameLabels:
    """Ground truth per frame from a COCO JSON file or a YOLO label directory.

    A frame is looked up by its RGB stamp in ns as the image (or label file) stem.
    """

    def __init__(self, path):
        from tesg_ros import detection

        self.path = Path(path)
        if self.path.is_dir():
            self.class_names = detection.read_class_names(_yolo_class_names(self.path))
            self.by_stem = None
        elif self.path.is_file():
            labels = detection.load_coco_labels(self.path)
            self.by_stem = {}
            for name, boxes in labels.items():
                stem = Path(name).stem
                if stem in self.by_stem:
                    raise ConfigError(f'{self.path}: several images named {stem}.*')
                self.by_stem[stem] = boxes
        else:
            raise ConfigError(f'labels {self.path} do not exist (expected a COCO JSON file or a '
                              'YOLO label directory)')

    def for_frame(self, stamp_ns, height, width):
        """The frame's [GroundTruthBox], or None when it is not labelled."""
        from tesg_ros import detection

        if self.by_stem is not None:
            return self.by_stem.get(str(stamp_ns))
        label_file = self.path / f'{stamp_ns}.txt'
        if not label_file.is_file():
            return None
        return detection.read_yolo_label_file(label_file, height, width, self.class_names)


class DetectionRun:
    """Detections of one evaluation, per method (:data:`METHODS`), and their score.

    ``detector`` None: nothing runs (:attr:`active` is False). A detector that fails on a frame
    is switched off for the rest of the run, with the reason in ``problems``.
    """

    def __init__(self, detector, labels=None, spec=None):
        self.detector, self.labels, self.spec = detector, labels, spec
        self.detections = {method: [] for method in METHODS}
        self.frame_shapes = []

    @property
    def active(self):
        return self.detector is not None

    def detect(self, frame_index, images, problems):
        """Run on ``images`` {method: BGR image}; the boxes per method, or None when the
        detector failed (and is now off)."""
        try:
            found = {method: self.detector.detect(images[method]) for method in METHODS}
        except TesgError as error:
            problems.append(f'the detector failed on frame {frame_index} and was '
                            f'switched off: {error}')
            self.detector = None
            return None
        for method in METHODS:
            self.detections[method].append(found[method])
        self.frame_shapes.append(images['model'].shape[:2])
        return found

    def score(self, frames, problems):
        """``{'detector', 'labels', 'labelled_frames', 'table'}`` over the first detected
        ``frames`` (FrameRecord); labelled frames only when labels are given."""
        from tesg_ros import detection

        frames = frames[:len(self.frame_shapes)]
        chosen = list(range(len(frames)))
        truth = None
        if self.labels is not None:
            truth_by_frame = [self.labels.for_frame(f.rgb_stamp_ns, *shape)
                              for f, shape in zip(frames, self.frame_shapes)]
            chosen = [i for i, boxes in enumerate(truth_by_frame) if boxes is not None]
            truth = [truth_by_frame[i] for i in chosen]
            if not chosen:
                problems.append(
                    f'no evaluated frame is labelled in {self.labels.path} (frames are named '
                    'by their RGB stamp in ns); detections are only counted')
                chosen, truth = list(range(len(frames))), None
        variants = {method: [self.detections[method][i] for i in chosen]
                    for method in METHODS}
        table = detection.score_variants(variants, truth)
        for scored in table['variants'].values():
            scored.pop('frames', None)
        return {'detector': getattr(self.detector, 'name', self.spec),
                'labels': None if truth is None else str(self.labels.path),
                'labelled_frames': 0 if truth is None else len(chosen), 'table': table}
