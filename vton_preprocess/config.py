"""Every tunable constant of the preprocessing, in one place.

Sizes in pixels are at the stated working resolution; colour distances are in OpenCV's 8-bit
CIELAB units (L, a, b each in 0..255).
"""
from __future__ import annotations

#: (W, H) of CP-VTON+ inputs.
MODEL_SIZE = (192, 256)
#: Width / height of the person box (3:4).
MODEL_ASPECT = MODEL_SIZE[0] / MODEL_SIZE[1]

# ---- cloth segmentation -------------------------------------------------------------------
CLOTH_WORK_LONG_SIDE = 320      # longer side of the working image
CLOTH_BORDER_PX = 3             # width of the frame used to estimate the background colour
CLOTH_BORDER_NOISE_PCT = 75     # percentile of the border's colour spread taken as "noise" (robust to a garment touching the frame)
CLOTH_NOISE_FACTOR = 1.5        # colour threshold = max(MIN, factor × border noise)
CLOTH_MIN_COLOUR_DIST = 8.0     # Lab distance below which a pixel is background-coloured
CLOTH_CANNY_LOW = 6            # Canny thresholds on the L channel (white-on-white outlines)
CLOTH_CANNY_HIGH = 18
CLOTH_CLOSE_PX = 7              # closing kernel that seals gaps in faint outlines
CLOTH_OPEN_PX = 3               # opening kernel that removes specks and thin shadows
CLOTH_MIN_AREA_FRAC = 0.02      # a mask smaller than this fraction of the image is "no cloth"
CLOTH_EDGE_BAND_WORK_PX = 1.5   # the mask's edge is re-decided by colour at the photo's resolution within this many working pixels
# A garment photo with a face in it shows a person wearing it (refused), unless the face is a print
# on the garment: the garment then extends this many face widths beyond the face on both sides.
CLOTH_FACE_MIN_SCORE = 0.75     # face-detector score that counts as a face in a garment photo
CLOTH_PRINT_MARGIN_FACES = 1.0

# ---- person analysis ----------------------------------------------------------------------
WORK_LONG_SIDE = 512            # person photos are analysed with their longer side at most this
POSE_MIN_DETECTION = 0.3        # MediaPipe pose detector threshold
FACE_MIN_DETECTION = 0.5        # face detector / face mesh threshold
KEYPOINT_MIN_CONFIDENCE = 0.5   # landmarks with a lower MediaPipe visibility are reported missing
BODY_PROB_THRESHOLD = 0.5       # mean of pose and selfie segmentation probabilities
FACE_CROP_SCALE = 2.6           # head crop side / face span (eye-to-ear or eye-to-mouth) for face mesh
FACE_CROP_SIZE = 192            # face mesh input side
PERSON_CROP_FACE_WIDTHS = 4.0   # with several people: half-width of the crop around the chosen face
# Labels further than this (model pixels) from the body mask are cleared: the parser may not
# label anything outside the person (busy backgrounds).
PARSE_BODY_MARGIN = 4

# ---- face mesh (MediaPipe's 468-point canonical face mesh) --------------------------------
# Face keypoints come from the mesh, which is far more precise on the face than the pose model.
MESH_R_CHEEK, MESH_L_CHEEK = 234, 454   # face silhouette at tragion height, person's right / left
# OpenPose (COCO) puts an ear at the centre of the visible pinna, lateral of the face silhouette.
# Anthropometric means: bizygomatic breadth ≈ 13.5 cm, head breadth ≈ 15.5 cm plus ≈ 0.5 cm to
# the pinna's centre, i.e. the ear centres lie ≈ 1.2 × the cheek silhouette's half-width from the
# face's mid-plane. Applied in the mesh's 3-D frame, so head yaw foreshortens it correctly.
EAR_LATERAL_SCALE = 1.2
# Person size checks (in model pixels, after framing to 192×256).
MIN_PERSON_HEIGHT_FRAC = 0.15   # body mask shorter than this fraction of the image: too small
FRAME_MARGIN = 0.06             # margin around the person inside the 3:4 box (fraction of height)
FEATHER_PX = 6                  # paste-back feather width, in model pixels (scales with the box)
PASTE_STRIP_PIXELS = 1 << 20    # the paste-back draws the try-on in strips of at most this many photo pixels
# VITON framing: the top of the head at HEAD_TOP_FRAC and the hip line at HIP_FRAC of the box
# height (where they sit in the VITON training images); from the shoulders when hips are absent.
HEAD_TOP_FRAC = 0.03
HIP_FRAC = 0.78
SHOULDER_FRAC = 0.32
MIN_PERSON_PX = 48              # a head-to-hip (or head-to-shoulder ×2.5) span below this: too small
PAD_COLOUR = (255, 255, 255)    # padding where the 3:4 box extends past the photo
# Bounds on the framing (a caller's pose decides the box): present keypoints may lie at most this
# fraction of the photo's width / height outside it; the box may be at most this many times the
# photo's longer side (a head-and-shoulders portrait with the shoulders at the bottom edge
# needs ~3.5).
POSE_MARGIN_FRAC = 0.25
MAX_BOX_TO_PHOTO = 4.0
