"""The two prompts: classify the image, then caption and tag it given its category.

``PROMPT_VERSION`` belongs in the analyzer's config hash: any change to the wording below must
bump it, so that evidence from the new prompt is new evidence.

Messages use the chat format that Qwen-VL chat templates (and OpenAI-style servers, after
``backend_openai`` swaps in the image URL) understand: a list of content parts, the image first.
"""

from __future__ import annotations

from typing import Any

from rag_pipeline.analysis.analyzers.vlm.schema import (
    CATEGORIES,
    MAX_TAGS,
    TAG_TYPES,
    Step,
)

PROMPT_VERSION = "vlm-caption-1"

Messages = list[dict[str, Any]]

SYSTEM_PROMPT = (
    "You describe images for a search index. Answer with one JSON object and nothing else: "
    "no code fences, no text before or after it."
)

CLASSIFY_PROMPT = (
    "What kind of image is this? Choose exactly one category from: " + ", ".join(CATEGORIES) + ". "
    'Answer as JSON: {"category": "<category>", "confidence": <number from 0 to 1>}.'
)

# Per category: what the image is and what matters in its caption.
CATEGORY_HINTS: dict[str, str] = {
    "photo": "This image is a photo. Describe the main subject, what it is doing and the setting.",
    "artwork": "This image is an artwork. Describe what is depicted and the medium or style.",
    "illustration": "This image is an illustration. Describe what is depicted and the drawing "
    "style.",
    "document": "This image is a document. Say what kind of document it is and its topic; "
    "legible key words become text tags.",
    "screenshot": "This image is a screenshot. Say what application, page or dialog it shows "
    "and what it is about.",
    "diagram": "This image is a diagram. Say what kind of chart or diagram it is and what it "
    "shows.",
    "other": "Say what the image shows.",
}

_CAPTION_PROMPT = (
    "{hint} "
    "Write exactly one factual sentence about what is visible. Do not guess names of people, "
    "places, brands or works unless they are written in the image. "
    "Then give 3 to {max_tags} tags. Each tag has a type, one of: {tag_types}; and a value of "
    "one to three lowercase words. "
    'Answer as JSON: {{"caption": "<sentence>", "confidence": <number from 0 to 1>, '
    '"tags": [{{"type": "<type>", "value": "<value>", "confidence": <number from 0 to 1>}}]}}.'
)


def _messages(text: str) -> Messages:
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
    ]


def classify_messages() -> Messages:
    return _messages(CLASSIFY_PROMPT)


def caption_messages(category: str) -> Messages:
    if category not in CATEGORY_HINTS:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    return _messages(
        _CAPTION_PROMPT.format(
            hint=CATEGORY_HINTS[category], max_tags=MAX_TAGS, tag_types=", ".join(TAG_TYPES)
        )
    )


def messages_for(step: Step, category: str | None = None) -> Messages:
    if step == "classify":
        return classify_messages()
    if category is None:
        raise ValueError("the caption step needs the category from the classify step")
    return caption_messages(category)
