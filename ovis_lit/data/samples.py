"""Turn a decoded WebDataset record into a model sample: formatting, preprocessing and length control.

Record layout (what `data/` builders and converters write): `<key>.json` holds either {"conversations": [...]}
(LLaVA style, `<image>` marks) or {"caption": "..."}, optionally "images": [member names] giving the image order;
images are members with image extensions (`<key>.png`, `<key>.0.jpg`, ...), in name order unless "images" says
otherwise. A conversation without images is a text-only sample. A conversation may hold one video instead of images
("video" in its JSON: frame members or an encoded-video member, see `video_records`).

Records arrive undecoded (member bytes). Only the JSON member and the image members a sample uses are decoded,
with `json` and PIL: no other member (`.pyd`, `.pth`, `.pkl`, ...) is ever decoded, so a shard cannot run
pickled code. Anything unusable raises Rejected with the reason the run's skip counters count:
`missing_json`, `bad_json` (unparsable, not an object, or not a well-formed sample), `missing_image`,
`decode_error` (an image that does not decode completely), `too_many_pixels` (over `max_image_pixels`),
`image_too_large` (over 128 MiB encoded; images go through `processing.image_decoding`, as in conversion and
evaluation), `degenerate_size` / `aspect_ratio` (an image Ovis2.5's resize rule cannot represent),
`empty_conversation`, `no_assistant_turn`, `empty_caption` (also a missing one: null, NaN), `invalid_sample`
(`<image>` marks and images differ in number, a system turn that is not first, a caption containing `<image>`, or
the chat format refuses the conversation), `too_long` (only with `truncate=False`),
`no_supervised_tokens` (nothing left to learn from, e.g. after truncation), and for videos the image reasons plus
`empty_video` (a corrupt or truncated video is a `decode_error`). The JSON checks are
`ovis_lit.data.validation`'s, the converters' own, so converted data is never skipped for them here.

With `text_only`, a record becomes a text-only sample: its `<image>` / `<video>` marks are dropped from the
conversation and no image or video member is decoded (a caption becomes a chat turn without an image). Such
samples train the LLM alone, on the data's language (stage s0: a language-model pretraining of a random LLM).
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field

from PIL import Image

from ..constants import IGNORE_ID, IMAGE_ATOM_ID, IMAGE_END_ID, IMAGE_START_ID, IMAGE_TOKEN, VIDEO_TOKEN
from ..processing.image_decoding import MAX_IMAGE_PIXELS, decode_image, to_rgb
from ..processing.processor import OvisProcessor, Sample
from ..rejection import Rejected
from .validation import check_conversation, check_image_count, check_meta, count_image_marks  # noqa: F401
from .video_records import DEFAULT_FRAMES, check_video, has_video, record_video, video_as_images

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
# a visual mark with the line break that usually follows it ("<image>\nWhat shape is shown?")
_VISUAL_MARK = re.compile(f"(?:{re.escape(IMAGE_TOKEN)}|{re.escape(VIDEO_TOKEN)})\n?")


def without_visual_marks(conversations: list[dict]) -> list[dict]:
    """The turns with every `<image>` / `<video>` mark removed (each turn's text stripped of the blank it leaves)."""
    return [{**turn, "value": _VISUAL_MARK.sub("", turn["value"]).strip()} for turn in conversations]


def _natural(name: str) -> list:
    """"2.png" before "10.png"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def record_meta(record: dict) -> dict:
    """The record's JSON object (decoded here, from bytes, if the record is raw)."""
    key = record.get("__key__")
    if "json" not in record:
        raise Rejected("missing_json", f"{key}: no .json member")
    meta = record["json"]
    if isinstance(meta, (bytes, bytearray, str)):
        try:
            meta = json.loads(meta)
        except (ValueError, RecursionError) as exn:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise Rejected("bad_json", f"{key}: {type(exn).__name__}: {exn}") from exn
    if not isinstance(meta, dict):
        raise Rejected("bad_json", f"{key}: no JSON object")
    return meta


def image_names(record: dict, meta: dict) -> list[str]:
    """The members holding the sample's images, in order: the JSON's "images", else every image member."""
    names = meta.get("images")
    if names is None:
        if has_video(meta):  # its frames are image members, not images of the sample
            return []
        return sorted((k for k in record if k.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS), key=_natural)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Rejected("bad_json", f"{record.get('__key__')}: 'images' must be a list of member names")
    return names


def record_images(record: dict, meta: dict, max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[Image.Image]:
    key = record.get("__key__")
    images = []
    for name in image_names(record, meta):
        if name not in record or name.startswith("__"):
            raise Rejected("missing_image", f"{key}: no member {name!r}")
        image = record[name]
        if isinstance(image, Image.Image):  # decoded already (tests, callers with their own decoding)
            images.append(to_rgb(image))
            continue
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise Rejected("decode_error", f"{key}: {name} is not an image")
        try:
            images.append(decode_image(image, max_pixels))
        except Rejected as exn:
            raise Rejected(exn.reason, f"{key}: {name}: {exn.detail}") from exn
    return images


def fit_length(sample: Sample, max_length: int) -> Sample:
    """Keep the head of a sample longer than `max_length` ids, never cutting an image in half (a cut inside an image
    moves to just before it, and that image's crops are dropped): the ids hold every visual token (one -300 each), so
    their length is the LLM's length."""
    if len(sample.input_ids) <= max_length:
        return sample
    if hasattr(sample, "grid_thws"):  # Ovis2.5: indicators of its own
        from ..processing.native_processor import fit_native_length

        return fit_native_length(sample, max_length)
    cut, image_start = max_length, None
    for i, token in enumerate(sample.input_ids[:max_length]):
        if token == IMAGE_START_ID:
            image_start = i
        elif token == IMAGE_END_ID:
            image_start = None
    if image_start is not None:  # stopped inside an image: drop it whole
        cut = image_start
    # every crop is the same run of visual tokens, so the kept crops are the kept tokens' share
    atoms = sample.input_ids.count(IMAGE_ATOM_ID)
    kept_crops = sample.input_ids[:cut].count(IMAGE_ATOM_ID) * sample.n_crops // atoms if atoms else 0
    return Sample(
        sample.input_ids[:cut],
        sample.labels[:cut],
        sample.pixel_values[:kept_crops],
        sample.prompt,
        {**sample.meta, "truncated": True},
    )


@dataclass
class SampleBuilder:
    """Callable record -> Sample used inside dataloader workers (so it must pickle)."""

    processor: OvisProcessor
    max_length: int  # ids per sample, visual tokens included (one -300 each)
    captions_as: str = "template"  # "template": caption pretraining (stage 1); "chat": a described image (stage 2)
    caption_template: str = f"{IMAGE_TOKEN}\n"
    caption_prompts: list[str] = field(default_factory=lambda: ["Describe the image."])
    truncate: bool = True  # False: over-long samples are skipped instead of cut
    max_image_pixels: int | None = MAX_IMAGE_PIXELS  # larger images are skipped (`too_many_pixels`), undecoded
    video_frames: int = DEFAULT_FRAMES  # a video's frames are sampled uniformly down to this many (video_records)
    text_only: bool = False  # drop the images / video and their marks: text-only samples (the LLM alone trains)

    def __post_init__(self):
        if self.captions_as not in ("template", "chat"):
            raise ValueError(f"captions_as must be 'template' or 'chat', got {self.captions_as!r}")
        if self.text_only and self.captions_as != "chat":
            # a caption template is the text that precedes an image: without the image only the chat form is left
            raise ValueError("text_only samples take captions as chat turns: set captions_as='chat'")

    def __call__(self, record: dict) -> Sample:
        key = record.get("__key__", "")
        meta = record_meta(record)
        check_meta(meta, key, self._allows_system())  # the converters' checks (ovis_lit.data.validation)
        check_image_count(meta, len(image_names(record, meta)), key)  # before any image is decoded
        check_video(meta, key)
        if self.text_only:  # nothing visual is decoded
            images, video = [], None
        else:
            images = record_images(record, meta, self.max_image_pixels)
            video = record_video(record, meta, self.video_frames, self.max_image_pixels)
        try:
            sample = self._text_only(meta, key) if self.text_only else self._format(meta, images, key, video)
        except Rejected:  # an image the processor refuses (an Ovis2.5 degenerate size, ...): its own reason
            raise
        except ValueError as exn:  # formatter refusals: mismatched <image> count, system turn not first, ...
            raise Rejected("invalid_sample", f"{key}: {exn}") from exn
        if len(sample.input_ids) > self.max_length:
            if not self.truncate:
                raise Rejected("too_long")
            sample = fit_length(sample, self.max_length)
        if all(label == IGNORE_ID for label in sample.labels):
            raise Rejected("no_supervised_tokens", record.get("__key__", ""))
        sample.meta["key"] = record.get("__key__")
        return sample

    def _allows_system(self) -> bool:
        spec = getattr(getattr(self.processor, "formatter", None), "format_spec", None)
        return getattr(spec, "allows_system", True)

    def _text_only(self, meta: dict, key: str) -> Sample:
        if "conversations" in meta:
            return self.processor.conversation(without_visual_marks(meta["conversations"]), [])
        return self.processor.conversation([{"from": "human", "value": self._caption_prompt(key)},
                                            {"from": "gpt", "value": meta["caption"].strip()}], [])

    def _caption_prompt(self, key: str) -> str:
        """The prompt of a caption in chat form: one of `caption_prompts`, the same for a record every time."""
        return self.caption_prompts[zlib.crc32(key.encode()) % len(self.caption_prompts)]

    def _format(self, meta: dict, images: list[Image.Image], key: str, video: list[Image.Image] | None = None) -> Sample:
        if video is not None:
            if getattr(self.processor, "takes_video", False):  # Ovis2.5: one visual input on the temporal axis
                return self.processor.conversation(meta["conversations"], None, video)
            return self.processor.conversation(video_as_images(meta["conversations"], len(video)), list(video))
        if "conversations" in meta:
            return self.processor.conversation(meta["conversations"], images)
        if len(images) != 1:
            raise Rejected("invalid_sample", f"{key}: a caption sample needs one image, has {len(images)}")
        caption = meta["caption"].strip()
        if self.captions_as == "template":
            return self.processor.caption(caption, images[0], meta.get("caption_template") or self.caption_template)
        turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{self._caption_prompt(key)}"},
                 {"from": "gpt", "value": caption}]
        return self.processor.conversation(turns, images)
