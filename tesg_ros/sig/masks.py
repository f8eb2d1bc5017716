# Copyright 2026 The tesg_ros authors
# SPDX-License-Identifier: Apache-2.0
"""Mask semantics: soft masks (M x H x W float32 in [0, 1]) for MGCA, one per phrase.

Every backend is a callable ``backend(visible, thermal, phrases) -> masks`` where ``visible`` is
the visible frame (H x W x 3 BGR uint8, or H x W uint8), ``thermal`` is the thermal frame
registered to it (H x W, uint8 or float in [0, 1]), ``phrases`` is a sequence of M strings and
``masks`` has shape (M, H, W), dtype float32, values in [0, 1]. A phrase the backend cannot
ground (e.g. "a night scene" for the thermal backend) gets an all-zero mask, so mask ``i``
always belongs to phrase ``i``.

Backends:

* :class:`ThermalMaskBackend` - warm-object segmentation of the thermal frame (local-contrast
  threshold, morphology, connected components, grown by hysteresis over the cooler parts of
  each object, edges re-found at full resolution), filtered by the object classes the phrase
  names (people-shaped vs vehicle-shaped blobs). Runs per frame.
* :class:`HogMaskBackend` - person boxes from OpenCV's HOG people detector as soft masks.
* :class:`ClipSegMaskBackend` - CLIPSeg (transformers) from a local model directory, one
  text-prompted mask per phrase. Slow on a CPU.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from tesg_ros.errors import ConfigError
from tesg_ros.sig.images import to_bgr, to_unit_thermal  # noqa: F401 (re-exported)
from tesg_ros.sig.request import (  # noqa: F401 (the vocabulary, re-exported)
    ANIMAL, PERSON_WORDS, text_classes, VEHICLE_WORDS, WARM_WORDS)

PERSON = 'person'
VEHICLE = 'vehicle'
WARM = 'warm'
HOT_AREA = 'hot area'
HOT_SPOT = 'hot spot'
# Warm-object shape labels each named class selects. Animals: a thermal frame has no range and
# no animal detector here, so only the small non-person blobs (shape guess, docs/semantics.md).
CLASS_LABELS = {PERSON: (PERSON,), VEHICLE: (VEHICLE,), ANIMAL: (HOT_SPOT,)}


def fit_masks(masks, channels):
    """Per-phrase masks (P, H, W) -> exactly ``channels`` masks (C, H, W) float32.

    The one fitting used in training and at run time, so the network sees the layout it was
    trained on: with more masks than channels the first ``channels - 1`` are kept and the
    rest merged (pixel-wise max) into the last (one channel: the union of all phrases);
    fewer are zero-padded.
    """
    height, width = masks.shape[1:]
    if channels == 0:
        return np.zeros((0, height, width), np.float32)
    if masks.shape[0] > channels:
        merged = masks[channels - 1:].max(axis=0, keepdims=True)
        masks = np.concatenate([masks[:channels - 1], merged], axis=0)
    elif masks.shape[0] < channels:
        padding = np.zeros((channels - masks.shape[0], height, width), np.float32)
        masks = np.concatenate([masks, padding], axis=0)
    return np.ascontiguousarray(masks, dtype=np.float32)


def phrase_classes(phrase):
    """Return the object classes a phrase names: a subset of {'person', 'vehicle', 'animal',
    'warm'} (:func:`tesg_ros.sig.request.text_classes`: synonyms, plurals, negation).

    Words are matched whole ("person-sized" names a person, "carpet" does not name a car).
    A phrase naming an object class uses warm words as adjectives ("warm person-shaped
    object" is a person); one with warm words only ("small hot spot") names 'warm'.
    """
    return text_classes(phrase)


def horizontal_position(centre_x, width):
    """'left', 'centre' or 'right': which third of the image ``centre_x`` (pixels) falls in."""
    fraction = centre_x / float(width)
    if fraction < 1.0 / 3.0:
        return 'left'
    if fraction < 2.0 / 3.0:
        return 'centre'
    return 'right'


@dataclass(frozen=True)
class ThermalSegmentationParams:
    """Tuning of :func:`segment_warm_objects`; all sizes are fractions of the image.

    work_size: longer side (pixels) of the internal working image; the frame is area-downscaled
        to it, which sets the cost (a few ms) and the smallest object found (about 2 px there).
    background_sigma: Gaussian sigma of the local background, as a fraction of the longer side.
    noise_factor / min_contrast: a pixel is warm when it exceeds the local background by more
        than max(noise_factor * robust noise, min_contrast) (thermal units in [0, 1]).
    warm_percentile: a component's mean temperature must reach this percentile of the
        non-warm pixels (drops locally bright but globally cool clutter such as foliage).
    min_area: smallest component kept, fraction of the image area.
    person_min_height: smallest person-shaped blob, fraction of the image height.
    person_aspect: height / width at or above which a blob is person-shaped (upright).
    person_max_height: a person-shaped blob taller than this fraction of the image height is
        not called a person (too large for the heuristic to be credible).
    vehicle_aspect: width / height at or above which a blob is vehicle-shaped (wide).
    vehicle_min_area: smallest vehicle-shaped blob, fraction of the image area.
    hot_area: blobs larger than this area fraction that are neither shape are 'hot area'.
    padding_min_area / padding_solidity: see :func:`registration_padding`.
    grow_ratio: hysteresis for the object masks. The threshold above finds only the warmest
        parts of an object (a person's face, hands and legs, not the clothed torso); each kept
        object's mask grows into connected pixels that exceed the local background by more
        than grow_ratio times that threshold (1.0: no growth). Object classes and boxes still
        come from the warm cores (but see complete_upright).
    grow_steps: the growth stops this many working pixels from the warm core, so a lukewarm
        background connected to an object is not flooded.
    fill_holes: regions enclosed by an object's mask that are warmer than their local
        background (a torso between warm arms) become part of the object.
    full_resolution_edges: re-find the mask edges at the frame's resolution (within one
        working pixel of the working-resolution edge, a pixel is in the object when it exceeds
        the upsampled background by the growth threshold): a working pixel of a 192-px image
        spans 3-4 px of a VGA frame, which put the soft mask edge up to 4 px off the object.
    complete_upright: an upright group of object parts (a person whose head, arms and legs are
        warm but whose clothed torso is not, in any pose) is completed to its convex hull, minus
        what is no warmer than the background there (the ground between the legs): see
        :func:`complete_upright_objects`. The background it compares against leaves the warm
        pixels out (:func:`object_free_background`), as the plain blur includes the object's own
        heat. Such a group with a person-shaped part is one person
        (:func:`merge_grouped_objects`).
    upright_gap: parts up to this fraction of the image height above one another count as one
        upright group.
    """

    work_size: int = 192
    background_sigma: float = 0.06
    noise_factor: float = 4.0
    min_contrast: float = 0.05
    warm_percentile: float = 95.0
    min_area: float = 4e-4
    person_min_height: float = 0.04
    person_aspect: float = 1.4
    person_max_height: float = 0.9
    vehicle_aspect: float = 1.3
    vehicle_min_area: float = 1.5e-3
    hot_area: float = 0.01
    padding_min_area: float = 0.01
    padding_solidity: float = 0.97
    grow_ratio: float = 0.4
    grow_steps: int = 6
    fill_holes: bool = True
    full_resolution_edges: bool = True
    complete_upright: bool = True
    upright_gap: float = 0.05

    def __post_init__(self):
        if self.work_size < 32:
            raise ConfigError(
                f'semantics.thermal_mask.work_size must be >= 32, got {self.work_size}')
        if not 0.0 < self.background_sigma < 1.0:
            raise ConfigError('semantics.thermal_mask.background_sigma must be in (0, 1), '
                              f'got {self.background_sigma}')
        if self.min_contrast <= 0.0 or self.noise_factor < 0.0:
            raise ConfigError('semantics.thermal_mask.min_contrast must be > 0 and '
                              'noise_factor >= 0')
        if not 0.0 < self.grow_ratio <= 1.0:
            raise ConfigError('semantics.thermal_mask.grow_ratio must be in (0, 1], '
                              f'got {self.grow_ratio}')
        if not 0.0 < self.upright_gap < 1.0:
            raise ConfigError('semantics.thermal_mask.upright_gap must be in (0, 1), '
                              f'got {self.upright_gap}')
        if isinstance(self.grow_steps, bool) or not isinstance(self.grow_steps, int) \
                or self.grow_steps < 0:
            raise ConfigError('semantics.thermal_mask.grow_steps must be an int >= 0, '
                              f'got {self.grow_steps!r}')


# For comparisons: the warm cores alone, edges from the working image (no growth, no filling).
WARM_CORES_ONLY = ThermalSegmentationParams(grow_ratio=1.0, fill_holes=False,
                                            full_resolution_edges=False, complete_upright=False)


@dataclass(frozen=True)
class WarmObject:
    """One warm connected component of the thermal frame (full-resolution pixel units).

    label: 'person', 'vehicle', 'hot area' or 'hot spot' (shape heuristic, see params).
    box: (x, y, width, height) ints; centre: (x, y) floats; area_fraction: of the image area;
    position: 'left' / 'centre' / 'right'; contrast: mean excess over the local background.
    component: label id in :attr:`WarmSegmentation.labels`.
    """

    label: str
    box: tuple
    centre: tuple
    area_fraction: float
    position: str
    contrast: float
    component: int


@dataclass(frozen=True)
class WarmSegmentation:
    """Result of :func:`segment_warm_objects`.

    labels: int32 component image of the warm cores at the working resolution (0 = background).
    objects: the kept :class:`WarmObject` s, largest first.
    frame_shape: (H, W) of the input frame.
    object_labels: int32 working-resolution image of the objects' full extent (each warm core
        grown by hysteresis, enclosed warm holes filled; see ThermalSegmentationParams), holding
        each object's ``component`` id; None = the cores only.
    edge_thermal / edge_background / edge_level: for edges re-found at full resolution: the
        H x W float32 thermal frame in [0, 1], its working-resolution local background and the
        excess above it that counts as part of an object; None = edges from the working image.
    """

    labels: np.ndarray
    objects: tuple
    frame_shape: tuple
    object_labels: np.ndarray = None
    edge_thermal: np.ndarray = None
    edge_background: np.ndarray = None
    edge_level: float = None
    _full_resolution_cache: dict = field(default_factory=dict, init=False, repr=False,
                                         compare=False)

    def soft_mask(self, objects, edge_sigma=1.0):
        """H x W float32 in [0, 1]: the union of ``objects`` with blurred (soft) edges.

        ``edge_sigma`` is in working-resolution pixels. Without full-resolution edges the blur
        happens at the working resolution and the result is bilinearly upsampled; with them
        (:attr:`edge_thermal` set) the edge is re-found and blurred at full resolution (sigma
        ``edge_sigma`` frame pixels) in the objects' bounding box only, so the cost does not
        grow with the frame size beyond the objects' area.
        """
        height, width = self.frame_shape
        if not objects:
            return np.zeros((height, width), np.float32)
        ids = sorted({obj.component for obj in objects})
        labels = self.labels if self.object_labels is None else self.object_labels
        if self.edge_thermal is not None:
            # Phrases naming the same objects (people, and all warm objects in a scene of
            # people) share one full-resolution pass.
            key = (tuple(ids), float(edge_sigma))
            if key not in self._full_resolution_cache:
                self._full_resolution_cache[key] = self._full_resolution_mask(
                    np.isin(labels, ids).astype(np.float32), edge_sigma)
            return self._full_resolution_cache[key].copy()
        small = np.isin(labels, ids).astype(np.float32)
        if edge_sigma > 0:
            small = cv2.GaussianBlur(small, (0, 0), edge_sigma)
            # Re-saturate the interior so the blur only softens the border.
            small = np.minimum(small * 2.0, 1.0)
        mask = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0, out=mask)

    def _full_resolution_mask(self, small, edge_sigma):
        height, width = self.frame_shape
        mask = np.zeros((height, width), np.float32)
        work_height, work_width = small.shape
        kernel = np.ones((3, 3), np.uint8)
        near = cv2.dilate(small, kernel)
        rows, cols = np.nonzero(near)
        # The objects' box (one working pixel around them), in frame pixels with a margin for
        # the blur.
        scale_y, scale_x = height / work_height, width / work_width
        margin = 2 + int(np.ceil(3 * edge_sigma))
        top = max(0, int(rows.min() * scale_y) - margin)
        bottom = min(height, int(np.ceil((rows.max() + 1) * scale_y)) + margin)
        left = max(0, int(cols.min() * scale_x) - margin)
        right = min(width, int(np.ceil((cols.max() + 1) * scale_x)) + margin)

        # Bilinear upsampling of the working images, evaluated on the box only, in one call.
        map_x = (np.arange(left, right, dtype=np.float32) + 0.5) / scale_x - 0.5
        map_y = (np.arange(top, bottom, dtype=np.float32) + 0.5) / scale_y - 0.5
        map_x, map_y = np.meshgrid(map_x, map_y)
        stacked = np.dstack([self.edge_background, cv2.erode(small, kernel), near])
        warped = cv2.remap(stacked, map_x, map_y, cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        background, eroded, near = warped[..., 0], warped[..., 1], warped[..., 2]
        crop = self.edge_thermal[top:bottom, left:right]
        # A 3x3 mean keeps single noisy pixels from deciding the edge.
        excess = cv2.blur(crop, (3, 3)) - background
        interior = eroded >= 0.5
        candidate = near > 0.0
        binary = (interior | (candidate & (excess > self.edge_level))).astype(np.float32)
        if edge_sigma > 0:
            binary = cv2.GaussianBlur(binary, (0, 0), edge_sigma)
        mask[top:bottom, left:right] = binary
        return np.clip(mask, 0.0, 1.0, out=mask)


def grow_objects(core_labels, excess, level, steps, fill_holes, valid=None):
    """Full extent of warm objects from their cores (hysteresis with a bounded reach).

    core_labels: int32 (h, w) label image of the kept warm cores (0 = none); excess: float32
    (h, w) the thermal image's excess over its local background; level: the excess a grown pixel
    needs; steps: how many 8-connected pixels the growth may reach from a core; fill_holes: also
    take each region enclosed by an object (after a 2-pixel closing, so gaps up to 4 px between
    its parts are bridged) whose mean excess is above 0, i.e. warmer than its local background
    (a clothed torso between warm arms; not the cold ground between two legs); valid: bool
    (h, w) or None, pixels that may be grown into. Returns an int32 (h, w) image holding, at
    each object pixel, the label of the nearest core.
    """
    cores = core_labels > 0
    if not cores.any():
        return np.zeros(core_labels.shape, np.int32)
    allowed = excess > level
    if valid is not None:
        allowed &= valid
    kernel = np.ones((3, 3), np.uint8)
    extent = cores.astype(np.uint8)
    reachable = (allowed | cores).astype(np.uint8)
    for _ in range(steps):
        grown = cv2.dilate(extent, kernel) & reachable
        if np.array_equal(grown, extent):
            break
        extent = grown
    if fill_holes:
        # The closing encloses a hole left open by a gap of a pixel or two (the neck between a
        # warm head and warm shoulders). Zero padding keeps the frame edge from closing it.
        closed = cv2.morphologyEx(cv2.copyMakeBorder(extent, 3, 3, 3, 3, cv2.BORDER_CONSTANT),
                                  cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8),
                                  borderType=cv2.BORDER_CONSTANT, borderValue=0)
        closed[3:-3, 3:-3] |= extent
        # What the flood from the frame border cannot reach is enclosed.
        outside = 1 - closed
        cv2.floodFill(outside, None, (0, 0), 0)
        candidates = ((outside[3:-3, 3:-3] | closed[3:-3, 3:-3]) & (1 - extent)).astype(np.uint8)
        count, holes = cv2.connectedComponents(candidates, connectivity=4)
        if count > 1:
            total = np.bincount(holes.ravel(), weights=excess.ravel(), minlength=count)
            size = np.bincount(holes.ravel(), minlength=count)
            warm = total / np.maximum(size, 1) > 0
            warm[0] = False
            extent = extent | warm[holes].astype(np.uint8)
    if core_labels.max() == core_labels[cores].min():
        return np.where(extent > 0, core_labels.max(), 0).astype(np.int32)
    # Each grown pixel takes the label of the nearest core (distances to the cores' pixels;
    # the transform labels the connected groups of core pixels, mapped back to core labels).
    _, groups = cv2.distanceTransformWithLabels(
        np.where(cores, 0, 255).astype(np.uint8), cv2.DIST_L2, 3,
        labelType=cv2.DIST_LABEL_CCOMP)
    to_core = np.zeros(int(groups.max()) + 1, np.int32)
    to_core[groups[cores]] = core_labels[cores]
    return np.where(extent > 0, to_core[groups], 0).astype(np.int32)


def complete_upright_objects(object_labels, work, warm, sigma, min_aspect, min_height, gap,
                             min_excess, valid=None):
    """Complete upright groups of object parts to their convex hull where it is warm.

    object_labels: int32 (h, w) object image (:func:`grow_objects`); work: float32 (h, w)
    thermal image; warm: (h, w) the pixels above the warm threshold. Parts whose gap above one
    another is at most ``gap`` pixels form a group, and a group at least ``min_height`` pixels
    tall and ``min_aspect`` times taller than wide is upright. Inside its hull, each region
    (4-connected) outside the parts whose mean excess (over its pixels not touching a part) is
    above ``min_excess`` is added, pixels of it no warmer than the background (3x3 mean of the
    pixels outside the parts) left out. The hull is weaker evidence than an enclosing object,
    so the region must be clearly warmer than the background, where an enclosed hole needs
    only be warmer: a torso between warm arms, head and legs is added, the ground between the
    legs and the background beside a raised arm are not.

    The excess is measured against the background that leaves out the warm pixels, the objects
    and the hulls (:func:`object_free_background`, Gaussian ``sigma`` pixels): the plain local
    background includes the person's own heat, so beside a person it is raised and a lukewarm
    torso falls below it. ``valid``: bool (h, w) or None, pixels that may be added. The added
    pixels take the label of the group's largest part.

    Returns ``(completed, groups)``: a new int32 image, and for each upright group the labels of
    its parts, largest first (:func:`merge_grouped_objects` may make one object of them).
    """
    extent = (object_labels > 0).astype(np.uint8)
    gap = max(1, int(round(gap)))
    # A zero border: OpenCV's default one would extend parts near the frame edge to it.
    kernel = np.ones((2 * (gap // 2) + 1, 3), np.uint8)
    grouped = cv2.morphologyEx(extent, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_CONSTANT,
                               borderValue=0) | extent
    count, groups, stats, _ = cv2.connectedComponentsWithStats(grouped, connectivity=8)
    upright = []
    occupied = extent | (np.asarray(warm) > 0).astype(np.uint8)
    for group in range(1, count):
        x, y, w, h, _ = (int(v) for v in stats[group])
        if h < min_height or h < min_aspect * w:
            continue
        window = (slice(y, y + h), slice(x, x + w))
        parts = (groups[window] == group) & (extent[window] > 0)
        hull = np.zeros(parts.shape, np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(parts.astype(np.uint8))), 1)
        occupied[window] |= hull
        part_labels = np.bincount(object_labels[window][parts])
        order = np.argsort(-part_labels, kind='stable')
        upright.append((window, hull, tuple(int(v) for v in order[part_labels[order] > 0])))
    if not upright:
        return object_labels, []
    excess = work - object_free_background(work, occupied, sigma, valid)
    # A 3x3 mean over the pixels outside the parts: the parts' own heat would otherwise leak
    # into the pixels beside them.
    free = (1 - extent).astype(np.float32)
    smooth = cv2.blur(excess * free, (3, 3)) / np.maximum(cv2.blur(free, (3, 3)), 1e-6)
    inner = cv2.erode(1 - extent, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=1) > 0
    completed = object_labels.copy()
    for window, hull, part_labels in upright:
        candidates = hull & (1 - extent[window])
        if valid is not None:
            candidates &= valid[window].astype(np.uint8)
        regions_count, regions = cv2.connectedComponents(candidates, connectivity=4)
        if regions_count < 2:
            continue
        # A region is judged by its pixels not touching the parts: the working pixels on an
        # object's edge hold part of its heat (area downscaling).
        judged = inner[window]
        total = np.bincount(regions[judged], weights=excess[window][judged],
                            minlength=regions_count)
        size = np.bincount(regions[judged], minlength=regions_count)
        warm_region = total / np.maximum(size, 1) > min_excess
        warm_region[0] = False
        added = warm_region[regions] & (smooth[window] > 0)
        completed[window][added] = part_labels[0]
    return completed, [part_labels for _, _, part_labels in upright]


def merge_grouped_objects(objects, groups, object_labels, frame_shape, params):
    """Make one person of each upright group of object parts that holds a person-shaped part.

    objects: the kept :class:`WarmObject` s, one per warm core; groups: the part labels of
    each upright group, largest first (:func:`complete_upright_objects`); object_labels: the
    object image. A person whose head, hands and hips are separate warm cores beside the
    person-shaped legs becomes one person: box the union of the parts' boxes, area and contrast
    summed and averaged over the parts, ``component`` the largest part's label, which all the
    group's pixels then carry. A group keeps its parts as they are when none of them is
    person-shaped (a lamp above a lit window) or when the union box is not
    (:func:`_classify_blob`: two people side by side).
    frame_shape: (H, W) of the frame. Returns ``(objects, object_labels)``, objects largest
    first; object_labels is a new image when something was merged.
    """
    by_component = {obj.component: obj for obj in objects}
    merged_ids = set()
    merged = []
    relabel = None
    for part_labels in groups:
        parts = [by_component[label] for label in part_labels if label in by_component]
        if len(parts) < 2 or not any(obj.label == PERSON for obj in parts):
            continue
        left = min(obj.box[0] for obj in parts)
        top = min(obj.box[1] for obj in parts)
        right = max(obj.box[0] + obj.box[2] for obj in parts)
        bottom = max(obj.box[1] + obj.box[3] for obj in parts)
        area = sum(obj.area_fraction for obj in parts)
        if _classify_blob(right - left, bottom - top, area, frame_shape[0], params) != PERSON:
            continue   # two people side by side, or parts too tall together to be one
        centre = (sum(obj.centre[0] * obj.area_fraction for obj in parts) / area,
                  sum(obj.centre[1] * obj.area_fraction for obj in parts) / area)
        merged.append(WarmObject(
            label=PERSON, box=(left, top, right - left, bottom - top), centre=centre,
            area_fraction=area,
            position=horizontal_position(centre[0], frame_shape[1]),
            contrast=sum(obj.contrast * obj.area_fraction for obj in parts) / area,
            component=parts[0].component))
        merged_ids.update(obj.component for obj in parts)
        if relabel is None:
            relabel = np.arange(int(object_labels.max()) + 1, dtype=np.int32)
        relabel[[obj.component for obj in parts]] = parts[0].component
    if not merged:
        return tuple(objects), object_labels
    kept = [obj for obj in objects if obj.component not in merged_ids] + merged
    kept.sort(key=lambda obj: obj.area_fraction, reverse=True)
    return tuple(kept), relabel[object_labels]


def object_free_background(work, occupied, sigma, valid=None):
    """(h, w) float32: the local background of ``work`` with the ``occupied`` pixels left out.

    A normalised Gaussian blur (sigma in pixels) of the pixels that are neither occupied (by
    a warm object) nor next to one (nor outside ``valid``, bool or None): each pixel's
    background is the weighted mean of the free pixels around it. Where none lies within reach
    (inside a very large object) the plain blur of ``work`` is used.
    """
    keep = 1 - cv2.dilate(occupied.astype(np.uint8), np.ones((3, 3), np.uint8))
    if valid is not None:
        keep &= valid.astype(np.uint8)
    keep = keep.astype(np.float32)
    weight = cv2.GaussianBlur(keep, (0, 0), sigma)
    background = cv2.GaussianBlur(work * keep, (0, 0), sigma)
    reached = weight > 1e-3
    background[reached] /= weight[reached]
    if not reached.all():
        background[~reached] = cv2.GaussianBlur(work, (0, 0), sigma)[~reached]
    return background


def _classify_blob(width, height, area_fraction, frame_height, params):
    aspect = height / max(width, 1)
    if (aspect >= params.person_aspect
            and params.person_min_height <= height / frame_height <= params.person_max_height):
        return PERSON
    if width / max(height, 1) >= params.vehicle_aspect and area_fraction >= \
            params.vehicle_min_area:
        return VEHICLE
    if area_fraction >= params.hot_area:
        return HOT_AREA
    return HOT_SPOT


def registration_padding(unit, min_area=0.01, min_solidity=0.97, tolerance=0.03,
                         max_mismatch=0.05):
    """H x W bool: the constant border a registration warp leaves around a thermal frame.

    unit: H x W float32 thermal in [0, 1]. Padding is a region within ``tolerance`` of 0 or of
    1 (JPEG-compressed frames ring around the exact value) that touches the frame edge and
    covers at least ``min_area`` of the frame, and whose valid part looks like the image of a
    rectangle under a homography, clipped by the frame: convex (area over convex-hull area at
    least ``min_solidity``) and a polygon of at most 8 straight sides (approximated to 1 % of
    the frame size, differing from the valid part by at most ``max_mismatch`` of the padding
    area). Cold sky or a saturated hot object at the edge has a ragged outline and is not taken
    for padding. Returns None when there is none.
    """
    height, width = unit.shape
    padding = np.zeros((height, width), bool)
    for candidate in (unit <= tolerance, unit >= 1.0 - tolerance):
        edge = np.concatenate([candidate[0], candidate[-1], candidate[:, 0], candidate[:, -1]])
        if not edge.any() or np.count_nonzero(candidate) < min_area * unit.size:
            continue
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            candidate.astype(np.uint8), connectivity=4)
        edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0],
                                                labels[:, -1]]))
        for label in edge_labels[edge_labels > 0]:
            if stats[label, cv2.CC_STAT_AREA] >= min_area * unit.size:
                padding |= labels == label
    if not padding.any():
        return None
    contours, _ = cv2.findContours((~padding).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    hull_area = cv2.contourArea(cv2.convexHull(largest))
    if hull_area <= 0 or cv2.contourArea(largest) / hull_area < min_solidity:
        return None
    polygon = cv2.approxPolyDP(largest, 0.01 * max(height, width), True)
    if len(polygon) > 8:
        return None
    filled = np.zeros((height, width), np.uint8)
    cv2.fillPoly(filled, [polygon], 1)
    mismatch = np.count_nonzero(filled.astype(bool) == padding)  # polygon vs valid part
    if mismatch > max_mismatch * np.count_nonzero(padding):
        return None
    return padding


def segment_warm_objects(thermal, params=ThermalSegmentationParams()):
    """Find the warm objects of a registered thermal frame.

    thermal: H x W uint8, or float in [0, 1] (see :func:`to_unit_thermal`).
    A pixel is warm when it exceeds its local background (a wide Gaussian blur) by more than
    max(noise_factor * 1.4826 * MAD, min_contrast); small speckles are removed by an opening,
    gaps closed by a closing, and connected components smaller than ``min_area`` dropped.
    The class of a component is a shape heuristic only (upright: person; wide and large
    enough: vehicle) - a thermal camera gives no range, so size in pixels cannot tell a near
    dog from a far person. Registration padding (:func:`registration_padding`) is left out of
    every statistic and is never warm. Each kept core then grows to its object's extent
    (:func:`grow_objects`, ``params.grow_ratio``), which sets the masks, and the parts of an
    upright person become one object (:func:`complete_upright_objects`,
    :func:`merge_grouped_objects`, ``params.complete_upright``).
    Returns a :class:`WarmSegmentation`.
    """
    unit = to_unit_thermal(thermal)
    frame_height, frame_width = unit.shape
    scale = min(1.0, params.work_size / float(max(frame_height, frame_width)))
    work_width = max(1, round(frame_width * scale))
    work_height = max(1, round(frame_height * scale))
    work = cv2.resize(unit, (work_width, work_height), interpolation=cv2.INTER_AREA)
    padding = registration_padding(unit, params.padding_min_area, params.padding_solidity)
    valid = None
    if padding is not None:
        valid = cv2.resize(padding.astype(np.float32), (work_width, work_height),
                           interpolation=cv2.INTER_AREA) == 0
        # The median of the valid pixels keeps the padding out of the background blur.
        work = np.where(valid, work, np.float32(np.median(work[valid]))).astype(np.float32)
    sigma = params.background_sigma * max(work_width, work_height)
    background = cv2.GaussianBlur(work, (0, 0), sigma)
    excess = work - background
    valid_excess = excess if valid is None else excess[valid]
    noise = 1.4826 * float(np.median(np.abs(valid_excess - np.median(valid_excess))))
    threshold = max(params.noise_factor * noise, params.min_contrast)
    warm = excess > threshold
    if valid is not None:
        warm &= valid
    warm = warm.astype(np.uint8)
    # 2x2 opening then closing. OpenCV's morphologyEx uses one anchor for both passes, which
    # with an even kernel shifts each pass by a pixel (masks landed 2 working pixels down-right
    # of their objects, ~8 px in a 768-px frame); anchoring the two passes on opposite corners
    # cancels the shift (tested).
    kernel = np.ones((2, 2), np.uint8)
    warm = cv2.dilate(cv2.erode(warm, kernel, anchor=(0, 0)), kernel, anchor=(1, 1))
    warm = cv2.erode(cv2.dilate(warm, kernel, anchor=(0, 0)), kernel, anchor=(1, 1))
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(warm, connectivity=8)
    # Component statistics are summed over the label image once, not per component.
    excess_sum = np.bincount(labels.ravel(), weights=excess.ravel(), minlength=count)
    value_sum = np.bincount(labels.ravel(), weights=work.ravel(), minlength=count)
    # Percentile of the (valid) pixels that are not warm, so large warm objects do not raise it.
    cool = labels == 0 if valid is None else (labels == 0) & valid
    warm_level = float(np.percentile(work[cool], params.warm_percentile)) \
        if count > 1 and np.any(cool) else float(np.percentile(work, 50))
    to_frame = 1.0 / scale
    objects = []
    work_area = float(work_width * work_height)
    for component in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[component])
        area_fraction = area / work_area
        if area_fraction < params.min_area or value_sum[component] / area < warm_level:
            continue
        label = _classify_blob(w, h, area_fraction, work_height, params)
        centre = (float(centroids[component][0] * to_frame),
                  float(centroids[component][1] * to_frame))
        box = (int(np.floor(x * to_frame)), int(np.floor(y * to_frame)),
               int(np.ceil(w * to_frame)), int(np.ceil(h * to_frame)))
        objects.append(WarmObject(
            label=label, box=box, centre=centre, area_fraction=area_fraction,
            position=horizontal_position(centre[0], frame_width),
            contrast=float(excess_sum[component] / area), component=component))
    objects.sort(key=lambda obj: obj.area_fraction, reverse=True)
    labels = labels.astype(np.int32, copy=False)
    level = params.grow_ratio * threshold
    kept = np.zeros(count, np.int32)   # component id -> itself if kept, else 0
    kept_ids = [obj.component for obj in objects]
    kept[kept_ids] = kept_ids
    object_labels = grow_objects(kept[labels], excess, level, params.grow_steps,
                                 params.fill_holes, valid)
    if params.complete_upright and objects:
        object_labels, groups = complete_upright_objects(
            object_labels, work, warm, sigma, params.person_aspect,
            params.person_min_height * work_height, params.upright_gap * work_height,
            0.5 * level, valid)
        objects, object_labels = merge_grouped_objects(
            objects, groups, object_labels, (frame_height, frame_width), params)
    edges = {}
    if params.full_resolution_edges and scale < 1.0:
        edges = {'edge_thermal': unit, 'edge_background': background, 'edge_level': level}
    return WarmSegmentation(labels=labels, objects=tuple(objects),
                            frame_shape=(frame_height, frame_width),
                            object_labels=object_labels, **edges)


def _check_phrases(phrases):
    if isinstance(phrases, str):
        raise ConfigError('phrases must be a sequence of strings, not one string')
    phrases = list(phrases)
    for phrase in phrases:
        if not isinstance(phrase, str):
            raise ConfigError(f'every phrase must be a string, got {type(phrase).__name__}')
    return phrases


class ThermalMaskBackend:
    """Warm-object masks from the registered thermal frame, selected by the phrase's classes.

    A phrase naming people gets the person-shaped blobs, one naming vehicles the
    vehicle-shaped blobs; a phrase that only says warm/hot/fire gets every warm blob; any other
    phrase gets a zero mask. Cost: one area-downscale to ``work_size`` plus a few filters there
    (measured 5-7 ms per 640 x 480 frame with three phrases on a shared 2-core VM).
    """

    name = 'thermal'

    def __init__(self, params=ThermalSegmentationParams(), edge_sigma=1.0):
        self.params = params
        self.edge_sigma = float(edge_sigma)

    def __call__(self, visible, thermal, phrases):
        """Return (M, H, W) float32 masks in [0, 1] for M phrases at the thermal frame's size."""
        phrases = _check_phrases(phrases)
        segmentation = segment_warm_objects(thermal, self.params)
        height, width = segmentation.frame_shape
        masks = np.zeros((len(phrases), height, width), np.float32)
        for index, phrase in enumerate(phrases):
            classes = phrase_classes(phrase)
            wanted = {label for name in classes - {WARM} for label in CLASS_LABELS[name]}
            if WARM in classes:
                chosen = list(segmentation.objects)
            elif wanted:
                chosen = [obj for obj in segmentation.objects if obj.label in wanted]
            elif WARM in classes:
                chosen = list(segmentation.objects)
            else:
                continue
            masks[index] = segmentation.soft_mask(chosen, self.edge_sigma)
        return masks


class HogPeopleDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal-Triggs, 64 x 128 window).

    ``scale`` resizes the grey visible frame before detection: < 1 is faster but misses small
    people; > 1 finds people down to about 128 / scale pixels tall at a quadratic cost.
    ``min_weight`` is the SVM score a detection needs: on VIFB frames upsampled by 2, true
    people scored 1.2-3.7 and the false hits (poles, windows, car edges) 0.5-1.2.
    Boxes come back in input pixels.
    """

    def __init__(self, scale=1.0, min_weight=1.0, win_stride=8, pyramid_scale=1.05):
        self.scale = self._check_scale(scale)
        self.min_weight = float(min_weight)
        self.win_stride = int(win_stride)
        self.pyramid_scale = float(pyramid_scale)
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    @staticmethod
    def _check_scale(scale):
        if not scale > 0:
            raise ConfigError(f'semantics.hog.scale must be > 0, got {scale}')
        return float(scale)

    def detect(self, visible, scale=None):
        """Return a list of ((x, y, w, h), weight) person boxes, non-maximum suppressed.

        ``scale`` overrides the detector's own for this call.
        """
        scale = self.scale if scale is None else self._check_scale(scale)
        grey = cv2.cvtColor(to_bgr(visible), cv2.COLOR_BGR2GRAY)
        if scale != 1.0:
            interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=interpolation)
        if grey.shape[0] < 128 or grey.shape[1] < 64:
            return []
        stride = (self.win_stride, self.win_stride)
        boxes, weights = self._hog.detectMultiScale(
            grey, winStride=stride, padding=stride, scale=self.pyramid_scale)
        if len(boxes) == 0:
            return []
        weights = np.ravel(weights)
        keep = cv2.dnn.NMSBoxes([list(map(int, b)) for b in boxes], weights.tolist(),
                                self.min_weight, 0.4)
        result = []
        for index in np.ravel(keep):
            x, y, w, h = (float(v) / scale for v in boxes[index])
            result.append(((int(round(x)), int(round(y)), int(round(w)), int(round(h))),
                           float(weights[index])))
        return result


def boxes_soft_mask(boxes, shape, edge_fraction=0.15):
    """H x W float32 in [0, 1]: union of (x, y, w, h) boxes with edges fading over a fraction.

    Each box is 1 in its core and falls off linearly to 0 at the box edge over
    ``edge_fraction`` of its smaller side (a HOG box is loose around the person).
    """
    height, width = shape
    mask = np.zeros((height, width), np.float32)
    for x, y, w, h in boxes:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(width, x + w), min(height, y + h)
        if x1 <= x0 or y1 <= y0:
            continue
        ramp = max(1.0, edge_fraction * min(w, h))
        cols = np.arange(x0, x1, dtype=np.float32) + 0.5
        rows = np.arange(y0, y1, dtype=np.float32) + 0.5
        col_weight = np.minimum(np.minimum(cols - x, x + w - cols) / ramp, 1.0)
        row_weight = np.minimum(np.minimum(rows - y, y + h - rows) / ramp, 1.0)
        patch = np.minimum.outer(row_weight, col_weight)
        np.maximum(mask[y0:y1, x0:x1], patch, out=mask[y0:y1, x0:x1])
    return mask


class HogMaskBackend:
    """Person boxes from :class:`HogPeopleDetector` as soft masks for phrases naming people.

    ``images``: which frames HOG runs on, ``('visible', 'thermal')`` by default, and the boxes
    of both are joined: at night the visible frame shows few people (LLVIP night frames: 15 of
    127 persons found on the visible frame, 72 on the thermal one, see docs/semantics.md);
    HOG's gradient features find a warm person on a cooler background as well. A thermal frame
    of None is skipped. HOG is the costly cue: even with ``scale=0.5`` (the default) a
    640 x 480 frame took about 26 ms per image on a shared 2-core VM, and it then only finds
    people taller than about 256 pixels. Detection runs only when a phrase names people.
    """

    name = 'hog'

    def __init__(self, detector=None, images=('visible', 'thermal')):
        self.detector = detector if detector is not None else HogPeopleDetector(scale=0.5)
        images = tuple(images)
        if not images or set(images) - {'visible', 'thermal'}:
            raise ConfigError(f'semantics.hog.images must name visible and/or thermal, got '
                              f'{images!r}')
        self.images = images

    def boxes(self, visible, thermal):
        """Person boxes (x, y, w, h) found on the configured frames."""
        boxes = []
        if 'visible' in self.images:
            boxes += [box for box, _ in self.detector.detect(to_bgr(visible))]
        if 'thermal' in self.images and thermal is not None:
            grey = np.round(to_unit_thermal(thermal) * 255.0).astype(np.uint8)
            boxes += [box for box, _ in self.detector.detect(grey)]
        return boxes

    def __call__(self, visible, thermal, phrases):
        """Return (M, H, W) float32 masks in [0, 1] at the visible frame's size."""
        phrases = _check_phrases(phrases)
        bgr = to_bgr(visible)
        shape = bgr.shape[:2]
        masks = np.zeros((len(phrases),) + shape, np.float32)
        wants_people = [PERSON in phrase_classes(p) for p in phrases]
        if not any(wants_people):
            return masks
        person_mask = boxes_soft_mask(self.boxes(bgr, thermal), shape)
        for index, wanted in enumerate(wants_people):
            if wanted:
                masks[index] = person_mask
        return masks


class ClipSegMaskBackend:
    """CLIPSeg (``CLIPSegForImageSegmentation``) from a local directory: a mask per phrase.

    path: a directory with config.json, the weights and the processor (``CLIPSegProcessor``:
    preprocessor_config.json and the CLIP tokenizer files, as ``save_pretrained`` writes them);
    loaded with ``local_files_only=True``. ``image`` picks what is segmented: 'visible',
    'infrared' or 'both' (the two side by side, the mask is the mean of both halves). Masks are
    the sigmoid of the logits, bilinearly resized to the frame. ``parameter`` names the path
    setting in errors, ``image_parameter`` the image setting.

    CLIPSeg is far slower than the frame rate on a CPU: wrap it in a
    :class:`tesg_ros.sig.mask_refresher.MaskRefresher` so it runs at its own rate.
    """

    name = 'clipseg'

    def __init__(self, path, image='visible', device='cpu',
                 parameter='semantics.clipseg.path', image_parameter='semantics.clipseg.image'):
        from tesg_ros.sig.text_encoder import require_model_dir
        from tesg_ros.sig.images import check_image_source
        from tesg_ros.sig.vlm import load_processor
        import torch
        from transformers import AutoConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

        self.image = check_image_source(image, image_parameter)
        directory = require_model_dir(path, parameter)
        try:
            model_type = AutoConfig.from_pretrained(directory, local_files_only=True).model_type
            if model_type != 'clipseg':
                raise ValueError(f'its config.json is a {model_type!r} model, not clipseg')
            model = CLIPSegForImageSegmentation.from_pretrained(
                directory, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
            raise ConfigError(f'{parameter}: cannot load a CLIPSeg model from {directory}: '
                              f'{error}') from error
        self.processor = load_processor(directory, parameter, CLIPSegProcessor,
                                        what='CLIPSeg model')
        self.model = model.to(device).eval()
        self.device = device
        self.model_id = str(directory)
        self._torch = torch

    def _segment(self, rgb, phrases):
        # One image for all phrases: preprocess once, repeat as a view.
        pixel_values = self.processor.image_processor(images=[rgb], return_tensors='pt')[
            'pixel_values'].to(self.device, self.model.dtype)
        pixel_values = pixel_values.expand(len(phrases), -1, -1, -1)
        tokens = self.processor.tokenizer(list(phrases), padding=True, truncation=True,
                                          return_tensors='pt')
        with self._torch.inference_mode():
            logits = self.model(input_ids=tokens['input_ids'].to(self.device),
                                attention_mask=tokens['attention_mask'].to(self.device),
                                pixel_values=pixel_values).logits
        logits = logits.reshape(len(phrases), *logits.shape[-2:])
        return self._torch.sigmoid(logits).float().cpu().numpy()

    def __call__(self, visible, thermal, phrases):
        """Return (M, H, W) float32 masks in [0, 1] at the visible frame's size."""
        from tesg_ros.sig.images import compose_rgb

        phrases = _check_phrases(phrases)
        bgr = to_bgr(visible)
        height, width = bgr.shape[:2]
        masks = np.zeros((len(phrases), height, width), np.float32)
        if not phrases:
            return masks
        rgb = compose_rgb(bgr, thermal, self.image)
        probabilities = self._segment(rgb, phrases)
        for index, probability in enumerate(probabilities):
            if self.image == 'both':
                # Side-by-side input: average the visible and infrared halves.
                resized = cv2.resize(probability, (2 * width, height),
                                     interpolation=cv2.INTER_LINEAR)
                masks[index] = 0.5 * (resized[:, :width] + resized[:, width:])
            else:
                masks[index] = cv2.resize(probability, (width, height),
                                          interpolation=cv2.INTER_LINEAR)
        return np.clip(masks, 0.0, 1.0, out=masks)
