"""Human parsing from pose geometry and per-image colour models (pure NumPy/OpenCV).

Given the body mask, MediaPipe's raw landmarks and the face outline, every body pixel is
assigned one of four colour classes — skin, hair, upper clothes, lower clothes — by the
likelihood of its colour under a histogram learnt from seed regions of *this* image (face
centre, top of the head, torso centre, thighs) times a spatial prior derived from the pose
(hair lives at the head, upper clothes above the hip line, lower clothes below it). Skin is then
split by position into face, neck, arms and legs. All coordinates are work-image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import config as C

# LIP labels (spec §4).
BACKGROUND, HAIR, UPPER, PANTS, FACE, L_ARM, R_ARM, L_LEG, R_LEG, NECK = 0, 2, 5, 9, 13, 14, 15, 16, 17, 20

# Colour classes.
SKIN_C, HAIR_C, UPPER_C, LOWER_C = range(4)

# MediaPipe pose landmark indices used for the geometry.
MP_NOSE, MP_L_EYE, MP_R_EYE, MP_L_EAR, MP_R_EAR = 0, 2, 5, 7, 8
MP_MOUTH_L, MP_MOUTH_R = 9, 10
MP_L_SHOULDER, MP_R_SHOULDER, MP_L_ELBOW, MP_R_ELBOW, MP_L_WRIST, MP_R_WRIST = 11, 12, 13, 14, 15, 16
MP_L_INDEX, MP_R_INDEX = 19, 20
MP_L_HIP, MP_R_HIP, MP_L_KNEE, MP_R_KNEE, MP_L_ANKLE, MP_R_ANKLE = 23, 24, 25, 26, 27, 28


@dataclass(frozen=True)
class Geometry:
    """Body geometry in work pixels, from raw landmarks (33×3: x, y, visibility; may lie
    outside the image) and the face outline (K×2 polygon)."""
    lm: np.ndarray
    face_poly: np.ndarray
    #: mean y of the eyebrows and y of the nose base (face mesh); None: estimated from the pose.
    brow_y: float | None = None
    nose_base_y: float | None = None

    def scaled(self, f: float) -> "Geometry":
        """The same geometry in an image resized by ``f`` (pixel centres aligned)."""
        def m(v):
            return None if v is None else (v + 0.5) * f - 0.5
        lm = self.lm.copy()
        lm[:, :2] = m(lm[:, :2])
        return Geometry(lm=lm, face_poly=m(self.face_poly), brow_y=m(self.brow_y),
                        nose_base_y=m(self.nose_base_y))

    @property
    def eye_y(self) -> float:
        return float((self.lm[MP_L_EYE, 1] + self.lm[MP_R_EYE, 1]) / 2)

    @property
    def brow_line(self) -> float:
        """y of the eyebrows (from the pose: a fifth of the eye-to-chin drop above the eyes)."""
        if self.brow_y is not None:
            return self.brow_y
        return self.eye_y - 0.2 * max(1.0, self.chin_y - self.eye_y)

    @property
    def nose_base(self) -> float:
        """y of the nose base (from the pose: between the nose tip and the mouth)."""
        if self.nose_base_y is not None:
            return self.nose_base_y
        mouth_y = float((self.lm[MP_MOUTH_L, 1] + self.lm[MP_MOUTH_R, 1]) / 2)
        return float((self.lm[MP_NOSE, 1] + mouth_y) / 2)

    @property
    def shoulder_y(self) -> float:
        return float((self.lm[MP_L_SHOULDER, 1] + self.lm[MP_R_SHOULDER, 1]) / 2)

    @property
    def hip_y(self) -> float:
        return float((self.lm[MP_L_HIP, 1] + self.lm[MP_R_HIP, 1]) / 2)

    @property
    def torso(self) -> float:
        """Torso length T (≥ 1 px)."""
        return max(1.0, self.hip_y - self.shoulder_y)

    @property
    def shoulder_width(self) -> float:
        return max(1.0, float(np.linalg.norm(self.lm[MP_L_SHOULDER, :2] - self.lm[MP_R_SHOULDER, :2])))

    @property
    def chin_y(self) -> float:
        return float(self.face_poly[:, 1].max())

    @property
    def centre_x(self) -> float:
        return float((self.lm[MP_L_SHOULDER, 0] + self.lm[MP_R_SHOULDER, 0]
                      + self.lm[MP_L_HIP, 0] + self.lm[MP_R_HIP, 0]) / 4)


def _quantise(lab: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 Lab -> H×W int histogram bin index."""
    bl, ba, bb = C.HIST_BINS
    q = [(lab[..., i].astype(np.int32) * n) >> 8 for i, n in enumerate(C.HIST_BINS)]
    return (q[0] * ba + q[1]) * bb + q[2]


def _histogram(bins: np.ndarray, seeds: np.ndarray) -> np.ndarray | None:
    """Smoothed colour likelihood (flat, sums to ~1) of the seed pixels; None if too few."""
    if seeds.sum() < C.MIN_SEED_PIXELS:
        return None
    n = int(np.prod(C.HIST_BINS))
    h = np.bincount(bins[seeds], minlength=n).astype(np.float32).reshape(C.HIST_BINS)
    for i in range(h.shape[0]):
        h[i] = cv2.GaussianBlur(h[i], (5, 5), 1.0)
    h = 0.5 * h + 0.25 * np.roll(h, 1, axis=0) + 0.25 * np.roll(h, -1, axis=0)
    h /= max(h.sum(), 1e-6)
    return (h + C.HIST_FLOOR).ravel()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _polygon_mask(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    if len(poly) >= 3:
        hull = cv2.convexHull(np.round(poly).astype(np.int32))
        cv2.fillConvexPoly(m, hull, 1)
    return m > 0


def _segment_distance(px: np.ndarray, py: np.ndarray, chain: list[np.ndarray]) -> np.ndarray:
    """Distance of every point (px, py: arrays of one shape) to a polyline of 2-vectors."""
    best = np.full(px.shape, np.inf, np.float32)
    for a, b in zip(chain[:-1], chain[1:]):
        d = b - a
        L2 = float(d @ d) or 1e-6
        t = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / L2, 0, 1)
        best = np.minimum(best, np.hypot(px - (a[0] + t * d[0]), py - (a[1] + t * d[1])))
    return best


def _skin_model(lab: np.ndarray, seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean and inverse covariance of the skin colour (Lab), or None without enough seeds."""
    if seeds.sum() < C.MIN_SEED_PIXELS:
        return None
    x = lab[seeds].astype(np.float32)
    mu = np.median(x, axis=0)
    cov = np.cov(x.T) + np.diag([25.0, 4.0, 4.0])  # floor: lighting varies more than hue
    return mu, np.linalg.inv(cov)


def _mahalanobis(lab: np.ndarray, model) -> np.ndarray:
    """Mahalanobis distance of N×3 Lab colours to the skin model (N,)."""
    mu, icov = model
    d = lab.astype(np.float32) - mu.astype(np.float32)
    return np.sqrt(np.maximum(((d @ icov.astype(np.float32)) * d).sum(axis=1), 0))


def parse_person(rgb: np.ndarray, body: np.ndarray, geo: Geometry) -> np.ndarray:
    """LIP label map of one person.

    rgb: H×W×3 uint8 work image; body: H×W bool body mask; geo: landmarks and face outline in
    the same pixels. Returns H×W uint8 labels, 0 outside ``body``.
    """
    h, w = body.shape
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (3, 3), 0), cv2.COLOR_RGB2LAB)
    bins = _quantise(lab)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    T, sw, sy, hy, cy = geo.torso, geo.shoulder_width, geo.shoulder_y, geo.hip_y, geo.chin_y
    lm = geo.lm

    face = _polygon_mask((h, w), geo.face_poly) & body
    centre = geo.face_poly.mean(axis=0)
    inner = _polygon_mask((h, w), centre + C.SKIN_SEED_SHRINK * (geo.face_poly - centre))
    eye_y = float(min(lm[MP_L_EYE, 1], lm[MP_R_EYE, 1]))
    skin_seed = inner & body & (ys > eye_y)
    skin = _skin_model(lab, skin_seed)
    skinlike = np.zeros_like(body)   # only ever used inside the body
    if skin:
        skinlike[body] = _mahalanobis(lab[body], skin) < C.SKIN_MAHALANOBIS

    head_zone = body & (ys < cy)
    hair_seed = head_zone & ~cv2.dilate(face.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) \
        & ~skinlike & (ys < eye_y)
    x0 = min(lm[MP_L_SHOULDER, 0], lm[MP_R_SHOULDER, 0])
    x1 = max(lm[MP_L_SHOULDER, 0], lm[MP_R_SHOULDER, 0])
    mid, half = (x0 + x1) / 2, (x1 - x0) / 4
    torso_seed = body & ~skinlike & (np.abs(xs - mid) < half) \
        & (ys > sy + C.TORSO_SEED_TOP * T) & (ys < sy + C.TORSO_SEED_BOTTOM * T)
    knee_y = float((lm[MP_L_KNEE, 1] + lm[MP_R_KNEE, 1]) / 2)
    hx0 = min(lm[MP_L_HIP, 0], lm[MP_R_HIP, 0]) - 0.1 * sw
    hx1 = max(lm[MP_L_HIP, 0], lm[MP_R_HIP, 0]) + 0.1 * sw
    lower_seed = body & ~skinlike & (xs > hx0) & (xs < hx1) \
        & (ys > hy + C.LOWER_SEED_TOP * T) & (ys < knee_y)

    seeds = {SKIN_C: skin_seed, HAIR_C: hair_seed, UPPER_C: torso_seed, LOWER_C: lower_seed}
    hists = {c: _histogram(bins, s) for c, s in seeds.items()}

    # Spatial log-priors.
    s_hip = C.HIP_TRANSITION * T
    upper_p = _sigmoid((hy - ys) / s_hip) * _sigmoid((ys - cy) / (0.05 * T))
    lower_p = _sigmoid((ys - hy) / s_hip)
    hair_p = np.where(ys < sy, 1.0, np.exp(-(ys - sy) / (C.HAIR_DECAY * T)))
    priors = {SKIN_C: np.ones_like(ys), HAIR_C: hair_p, UPPER_C: upper_p, LOWER_C: lower_p}

    k = max(3, int(round(C.SCORE_SMOOTH_FRAC * h)) | 1)
    scores = np.full((4, h, w), -np.inf, np.float32)
    for c, hist in hists.items():
        if hist is None:
            continue
        sc = np.log(hist)[bins] + np.log(priors[c] + 1e-6)
        scores[c] = cv2.blur(sc.astype(np.float32), (k, k))
    if not np.isfinite(scores).any(axis=0).all():
        scores[UPPER_C] = np.where(np.isfinite(scores).any(axis=0), scores[UPPER_C], 0)
    cls = np.argmax(scores, axis=0)

    # Hair must be connected to the head.
    hair = (cls == HAIR_C) & body
    n, comp = cv2.connectedComponents(hair.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[hair & (ys < cy)])] = True
    keep[0] = False
    stray = hair & ~keep[comp]
    cls[stray] = np.where(ys[stray] < hy, UPPER_C, LOWER_C)

    labels = np.zeros((h, w), np.uint8)
    labels[cls == UPPER_C] = UPPER
    labels[cls == LOWER_C] = PANTS
    labels[cls == HAIR_C] = HAIR
    sk = (cls == SKIN_C) & body
    # Skin by position: face (at the head), neck/chest, legs (below the hips), arms.
    # Arms run to the index knuckle, so hands hanging below the hips stay arms.
    # Distances are needed at skin pixels only.
    iy, ix = np.nonzero(sk)
    px, py = ix.astype(np.float32), iy.astype(np.float32)
    right_arm = [lm[i, :2] for i in (MP_R_SHOULDER, MP_R_ELBOW, MP_R_WRIST, MP_R_INDEX)]
    left_arm = [lm[i, :2] for i in (MP_L_SHOULDER, MP_L_ELBOW, MP_L_WRIST, MP_L_INDEX)]
    legs_chain = [[lm[i, :2] for i in (hip, knee, ankle)] for hip, knee, ankle in
                  ((MP_L_HIP, MP_L_KNEE, MP_L_ANKLE), (MP_R_HIP, MP_R_KNEE, MP_R_ANKLE))]
    d_l = _segment_distance(px, py, left_arm)
    d_r = _segment_distance(px, py, right_arm)
    d_arm = np.minimum(d_l, d_r)
    sk_labels = np.where(d_l < d_r, L_ARM, R_ARM).astype(np.uint8)
    neck_zone = (py < sy + C.NECK_DEPTH * T) & (d_arm > 0.18 * sw) \
        & (np.abs(px - mid) < 0.5 * (x1 - x0))
    sk_labels[neck_zone] = NECK
    d_leg = np.minimum(*(_segment_distance(px, py, c) for c in legs_chain))
    legs = (py > hy) & (d_leg < d_arm)
    hip_mid_x = (lm[MP_L_HIP, 0] + lm[MP_R_HIP, 0]) / 2
    left_is_right_side = lm[MP_L_HIP, 0] > lm[MP_R_HIP, 0]
    on_left = (px > hip_mid_x) == left_is_right_side
    sk_labels[legs & on_left] = L_LEG
    sk_labels[legs & ~on_left] = R_LEG
    labels[iy, ix] = sk_labels
    face_region = _face_region(face, sk, cls == HAIR_C, geo, ys)
    labels[face_region] = FACE
    labels[face & ~face_region] = HAIR        # inside the outline only face or hair
    # Other skin at head height (under the jaw, beside the chin) is neck, not face.
    labels[sk & ~face_region & (ys < cy) & (labels != L_ARM) & (labels != R_ARM)] = NECK
    labels[~body] = BACKGROUND
    return labels


def _face_region(oval: np.ndarray, skin: np.ndarray, hair: np.ndarray, geo: Geometry,
                 ys: np.ndarray) -> np.ndarray:
    """The face label (H×W bool): the mesh's face oval plus the skin connected to it.

    oval: H×W bool filled face outline (∩ body); skin / hair: H×W bool colour classes.
    Inside the oval, below the eyebrows everything is face (eyes, brows, mouth, beard); above
    them only what is not hair (a fringe stays hair). Outside it, skin-coloured pixels that
    connect to the oval are face within ``FOREHEAD_REACH`` oval heights above its top (the
    forehead up to the hairline) and ``EAR_REACH`` oval widths beside it down to the nose base
    (the ears); the reach bounds keep neck and arms out.
    """
    poly = geo.face_poly
    top, bottom = float(poly[:, 1].min()), float(poly[:, 1].max())
    width = max(1.0, float(np.ptp(poly[:, 0])))
    height = max(1.0, bottom - top)
    core = oval & ((ys > geo.brow_line) | ~hair)
    if not core.any():
        return core
    # Distance (px) to the oval, for the lateral reach.
    dist = cv2.distanceTransform((~oval).astype(np.uint8), cv2.DIST_L2, 3)
    above = (ys < top + 0.5 * height) & (ys > top - C.FOREHEAD_REACH * height) \
        & (dist <= C.FOREHEAD_REACH * height)
    beside = (ys <= geo.nose_base) & (dist <= C.EAR_REACH * width)
    cand = core | (skin & ~oval & (above | beside))
    n, comp = cv2.connectedComponents(cand.astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[core])] = True
    keep[0] = False
    return keep[comp]
