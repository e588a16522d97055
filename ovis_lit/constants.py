"""Special ids shared by the text side and the model (the Ovis 1.6 convention)."""

IGNORE_ID = -100  # label value that the loss skips

IMAGE_TOKEN = "<image>"  # the literal marker in conversation text
IMAGE_TOKEN_ID = -200  # one whole image, before its placeholders are expanded
VIDEO_TOKEN = "<video>"  # Ovis2.5: the marker of a video (its frames)
VIDEO_TOKEN_ID = -201

# After expansion each image is a run of placeholders: one -300 per visual token plus indicator tokens. (The
# original Ovis 1.6/2 code writes one -300 per crop; processing/placeholders.py converts at the boundary.)
IMAGE_ATOM_ID = -300  # one visual token
IMAGE_START_ID = -301
PARTITION_START_ID = -302
COLUMN_SEPARATOR_ID = -303
ROW_SEPARATOR_ID = -304
IMAGE_END_ID = -305
# Order matters: the i-th indicator id uses row V - len(INDICATOR_IDS) + i of the visual embedding table.
INDICATOR_IDS = (IMAGE_START_ID, PARTITION_START_ID, COLUMN_SEPARATOR_ID, ROW_SEPARATOR_ID, IMAGE_END_ID)
