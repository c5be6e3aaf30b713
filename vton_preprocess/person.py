"""Person analysis (keypoints, parse, body mask) and framing for CP-VTON+.

``analyze_person`` runs MediaPipe (face detection to count people, pose with segmentation,
selfie segmentation, face mesh on a head crop) on a work copy of the photo whose longer side is
at most ``WORK_LONG_SIDE``. Body keypoints come from the pose model; eyes and ears from the face
mesh, which is far more precise on the face. The person is parsed by the learned parser inside
its 3:4 model box, on the runner the caller gives (``parser=``, see :mod:`.parser_runtime`; the
torch runner by default), and everything is returned in the input image's pixels. Nothing here
imports torch: only the default torch runner does, when it is first built.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from vton_core.errors import InvalidInput, NoPerson
from vton_core.images import check_same_size, load_label_map, load_rgb

from . import config as C
from . import models
from .framing import Framing, check_keypoints_in_photo, frame_person
from .parser_runtime import ParserRunner, load_person_parser

log = logging.getLogger(__name__)

#: COCO-18 index -> MediaPipe pose landmark index (neck, 1, is the shoulders' midpoint).
#: OpenPose's and MediaPipe's "left"/"right" both name the person's side.
MP_FOR_COCO = {0: 0, 2: 12, 3: 14, 4: 16, 5: 11, 6: 13, 7: 15, 8: 24, 9: 26, 10: 28,
               11: 23, 12: 25, 13: 27, 14: 5, 15: 2, 16: 8, 17: 7}
COCO_NECK, COCO_R_SHOULDER, COCO_L_SHOULDER = 1, 2, 5
#: MediaPipe face landmarks (nose, eyes, ears, mouth) that bound the head crop for face mesh.
MP_FACE = list(range(11))
#: MediaPipe pose landmarks replaced by the face mesh's: r-eye, l-eye, r-ear, l-ear.
MP_FACE_FROM_MESH = [5, 2, 8, 7]


@dataclass(frozen=True)
class PersonAnalysis:
    """Result of :func:`analyze_person`, in the analysed image's pixels.

    keypoints: 18×3 float32 (x, y, confidence in (0, 1]); (0, 0, 0) where missing.
    parse: H×W uint8 LIP labels (spec §4). body_mask: H×W bool.
    num_people: people detected (> 1: the largest was used). notes: remarks for the caller.
    """
    keypoints: np.ndarray
    parse: np.ndarray
    body_mask: np.ndarray
    num_people: int
    notes: tuple[str, ...]


def landmarks_to_coco(lm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """33×3 MediaPipe landmarks (x, y px, visibility) -> 18×3 COCO-18 keypoints.

    Landmarks outside the W×H frame or below ``KEYPOINT_MIN_CONFIDENCE`` become (0, 0, 0); the
    neck is the shoulders' midpoint (confidence the lower of the two) when both are present.
    """
    w, h = size
    kp = np.zeros((18, 3), np.float32)
    for c, m in MP_FOR_COCO.items():
        x, y, v = lm[m]
        if v >= C.KEYPOINT_MIN_CONFIDENCE and 0 <= x < w and 0 <= y < h:
            kp[c] = (x, y, v)
    r, l = kp[COCO_R_SHOULDER], kp[COCO_L_SHOULDER]
    if r[2] > 0 and l[2] > 0:
        kp[COCO_NECK] = ((r[0] + l[0]) / 2, (r[1] + l[1]) / 2, min(r[2], l[2]))
    return kp


def _resize(a: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    return a if (a.shape[1], a.shape[0]) == size else cv2.resize(a, size, interpolation=interp)


def _choose_person(rgb: np.ndarray) -> tuple[int, tuple[int, int, int, int] | None]:
    """Count faces; with several, return a crop box (x0, y0, x1, y1) around the largest."""
    res = models.run("face_detection", rgb)
    dets = res.detections or []
    if len(dets) <= 1:
        return max(1, len(dets)), None
    h, w = rgb.shape[:2]
    boxes = [d.location_data.relative_bounding_box for d in dets]
    b = max(boxes, key=lambda r: r.width * r.height)
    fw, fh = b.width * w, b.height * h
    cx = (b.xmin + b.width / 2) * w
    x0 = int(max(0, cx - C.PERSON_CROP_FACE_WIDTHS * fw))
    x1 = int(min(w, cx + C.PERSON_CROP_FACE_WIDTHS * fw))
    y0 = int(max(0, b.ymin * h - fh))
    return len(dets), (x0, y0, x1, h)


def _pose(rgb: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """Raw landmarks (33×3: x, y px, visibility) and the pose segmentation (H×W float)."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box or (0, 0, w, h)
    res = models.run("pose", rgb[y0:y1, x0:x1])
    if res.pose_landmarks is None:
        raise NoPerson("no person found in the image", field="image")
    cw, ch = x1 - x0, y1 - y0
    lm = np.array([(p.x * cw + x0, p.y * ch + y0, p.visibility)
                   for p in res.pose_landmarks.landmark], np.float32)
    seg = np.zeros((h, w), np.float32)
    if res.segmentation_mask is not None:
        seg[y0:y1, x0:x1] = res.segmentation_mask
    return lm, seg


def _face_mesh(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray | None:
    """468×3 face-mesh landmarks (x, y, z in work px; z is depth, same scale as x) from a head
    crop centred on the pose's face points, or None when the mesh finds no face."""
    pts = lm[MP_FACE, :2]
    centre = pts.mean(axis=0)
    span = max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 4.0)
    half = C.FACE_CROP_SCALE * span / 2
    x0, y0 = centre - half
    scale = C.FACE_CROP_SIZE / (2 * half)
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], np.float32)
    crop = cv2.warpAffine(rgb, m, (C.FACE_CROP_SIZE, C.FACE_CROP_SIZE), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REPLICATE)
    res = models.run("face_mesh", crop)
    if not res.multi_face_landmarks:
        return None
    mesh = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark],
                    np.float32) * C.FACE_CROP_SIZE / scale
    mesh[:, 0] += x0
    mesh[:, 1] += y0
    return mesh


def mesh_face_keypoints(mesh: np.ndarray) -> np.ndarray:
    """COCO-18 eyes and ears (4×2: r-eye, l-eye, r-ear, l-ear; x, y px) from a 468×3 face mesh.

    Eyes are the centres of the eye contours. Ears are the cheek silhouette points at tragion
    height pushed outward from the face's mid-plane by ``EAR_LATERAL_SCALE`` in the mesh's 3-D
    frame and projected back, i.e. the centre of the pinna, where OpenPose marks the ear.
    Sides are the person's (OpenPose's "right" is image left for a frontal face).
    """
    parts = models.face_part_indices()
    r_eye = mesh[parts["r_eye"], :2].mean(axis=0)
    l_eye = mesh[parts["l_eye"], :2].mean(axis=0)
    r_cheek, l_cheek = mesh[C.MESH_R_CHEEK], mesh[C.MESH_L_CHEEK]
    mid = (r_cheek + l_cheek) / 2
    r_ear = mid + C.EAR_LATERAL_SCALE * (r_cheek - mid)
    l_ear = mid + C.EAR_LATERAL_SCALE * (l_cheek - mid)
    return np.stack([r_eye, l_eye, r_ear[:2], l_ear[:2]]).astype(np.float32)


def _body_mask(prob: np.ndarray, pose_seg: np.ndarray) -> np.ndarray:
    """Threshold the mean probability; keep the parts that overlap the posed person; fill holes."""
    m = prob >= C.BODY_PROB_THRESHOLD
    n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[m & (pose_seg >= C.BODY_PROB_THRESHOLD)])] = True
    keep[0] = False
    m = keep[comp]
    n, comp = cv2.connectedComponents((~m).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]]))
    outside = np.zeros(n, bool)
    outside[border] = True
    outside[0] = False
    return ~outside[comp] if n > 1 else m


def _learned_parse(rgb: np.ndarray, keypoints: np.ndarray, body: np.ndarray,
                   parser: ParserRunner | None = None) -> np.ndarray:
    """H×W uint8 labels 0–20 of the photo from the learned parser run by ``parser`` (a runner of
    :mod:`.parser_runtime`; None: the torch runner).

    The parser reads the person's 3:4 box at the model's 192×256 (the photo itself when it is
    already 192×256); labels further than ``PARSE_BODY_MARGIN`` from the body mask are cleared,
    and the result is mapped back to the photo's pixels. rgb: H×W×3 uint8; keypoints: 18×3 in
    the photo's pixels; body: H×W bool.
    """
    h, w = rgb.shape[:2]
    framing = None if (w, h) == C.MODEL_SIZE else frame_person((w, h), keypoints, body)
    crop = rgb if framing is None else np.asarray(framing.crop_image(Image.fromarray(rgb)))
    run = parser if parser is not None else load_person_parser()
    labels = run(crop)                                                      # 256×192
    near = body if framing is None else framing.crop_mask(body)
    margin = 2 * C.PARSE_BODY_MARGIN + 1
    near = cv2.dilate(near.astype(np.uint8), np.ones((margin, margin), np.uint8)) > 0
    labels[~near] = 0
    return labels if framing is None else framing.uncrop_labels(labels)


def analyze_rgb(rgb: np.ndarray, *, parser: ParserRunner | None = None) -> PersonAnalysis:
    """Analyse an H×W×3 uint8 RGB person photo (see :func:`analyze_person`)."""
    h, w = rgb.shape[:2]
    s = min(1.0, C.WORK_LONG_SIDE / max(h, w))
    ww, wh = max(1, round(w * s)), max(1, round(h * s))
    work = _resize(rgb, (ww, wh), cv2.INTER_AREA)
    notes: list[str] = []
    num, box = _choose_person(work)
    if num > 1:
        notes.append(f"{num} people found; used the largest")
    lm, pose_seg = _pose(work, box)
    selfie = models.run("selfie", work).segmentation_mask
    prob = (pose_seg + selfie) / 2
    body = _body_mask(prob, pose_seg)
    if not body.any():
        raise NoPerson("no person found in the image", field="image")
    mesh = _face_mesh(work, lm)
    if mesh is None:
        notes.append("face not found; eyes and ears placed from the pose")
    else:
        lm = lm.copy()
        lm[MP_FACE_FROM_MESH, :2] = mesh_face_keypoints(mesh)

    # Back to the input's pixels.
    lm_full = lm.copy()
    lm_full[:, :2] = (lm[:, :2] + 0.5) / s - 0.5
    kp = landmarks_to_coco(lm_full, (w, h))
    if s != 1.0:
        body = _resize(prob * body, (w, h), cv2.INTER_LINEAR) >= C.BODY_PROB_THRESHOLD
    parse = _learned_parse(rgb, kp, body, parser)
    return PersonAnalysis(keypoints=kp, parse=parse, body_mask=body, num_people=num,
                          notes=tuple(notes))


def analyze_person(image, *, parser: ParserRunner | None = None) -> PersonAnalysis:
    """Keypoints, parse and body mask of the (largest) person in ``image``.

    image: PIL image, H×W×3 uint8 array or path/bytes (EXIF orientation honoured; any mode).
    parser: the person parser runner (:func:`.parser_runtime.load_person_parser`); None: torch.
    Raises :class:`vton_core.errors.NoPerson` when no person is found, :class:`vton_core.errors.InvalidImage` for
    unreadable input.
    """
    return analyze_rgb(np.asarray(load_rgb(image, field="image")), parser=parser)


@dataclass(frozen=True)
class ModelInputs:
    """What CP-VTON+ needs for one person, at the model's 192×256.

    image: 192×256 RGB PIL image; parse: 256×192 uint8; body_mask: 256×192 bool; keypoints: 18×3
    in 192×256 px; framing: how the photo was cropped (None when it was already 192×256).
    """
    image: Image.Image
    parse: np.ndarray
    body_mask: np.ndarray
    keypoints: np.ndarray
    framing: Framing | None
    num_people: int
    notes: tuple[str, ...]


def _check_pose(pose, size) -> np.ndarray:
    try:
        kp = np.asarray(pose, dtype=np.float32).reshape(18, 3)
    except Exception:
        raise InvalidInput("must be 18 (x, y, confidence) triples", field="pose") from None
    if not np.isfinite(kp).all():
        raise InvalidInput("has non-finite values", field="pose")
    check_keypoints_in_photo(kp, size)
    return kp


def person_model_inputs(image, *, parse=None, pose=None, body_mask=None,
                        parser: ParserRunner | None = None) -> ModelInputs:
    """Everything CP-VTON+ needs about the person, at 192×256.

    Caller-supplied ``parse`` (H×W labels), ``pose`` (18×3 in the input's pixels) and
    ``body_mask`` (H×W, non-zero = body; 8-bit images thresholded at 128) are used as they are;
    only what is missing is computed, the parse by ``parser`` (a runner of
    :func:`.parser_runtime.load_person_parser`; None: the torch runner). A 192×256 input is
    never reframed.
    """
    im = load_rgb(image, field="image")
    size = im.size
    if parse is not None:
        parse = load_label_map(parse, field="parse")
        check_same_size(parse, size, field="parse")
    if body_mask is not None:
        raw = load_label_map(body_mask, field="body_mask")
        check_same_size(raw, size, field="body_mask")
        body_mask = raw >= 128 if raw.max(initial=0) > 1 else raw > 0
    if pose is not None:
        pose = _check_pose(pose, size)
    num, notes = 1, ()
    if parse is None or pose is None or body_mask is None:
        a = analyze_rgb(np.asarray(im), parser=parser)
        num, notes = a.num_people, a.notes
        parse = a.parse if parse is None else parse
        pose = a.keypoints if pose is None else pose
        body_mask = a.body_mask if body_mask is None else body_mask
    if size == C.MODEL_SIZE:
        return ModelInputs(image=im, parse=parse, body_mask=body_mask, keypoints=pose,
                           framing=None, num_people=num, notes=notes)
    framing = frame_person(size, pose, body_mask)
    return ModelInputs(image=framing.crop_image(im), parse=framing.crop_labels(parse),
                       body_mask=framing.crop_mask(body_mask),
                       keypoints=framing.to_model_keypoints(pose), framing=framing,
                       num_people=num, notes=notes)
