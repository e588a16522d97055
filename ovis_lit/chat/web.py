"""demo.py's Gradio chat: image upload, multi-turn, streamed answers, thinking for Ovis2.5; served on localhost.

The conversation lives in the browser (Gradio's ChatInterface hands the shown history to every call), so each
answer rebuilds the turns and images from it and asks a fresh `ChatSession`: the prompt is the one chat.py would
build. Generation runs in a worker thread that feeds a queue through the streamer; the handler yields the text so
far. One answer is generated at a time (the model is shared)."""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no analytics, no version check

import html
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import gradio as gr

from ..rejection import Rejected
from .images import open_local_image, refusal
from .session import ChatSession, Decoding
from .web_history import THINKING_TITLE, conversation_from_history, message_files, stream_answer


def _warn(text: str) -> None:
    gr.Warning(html.escape(text))  # a toast renders HTML: "<image>" must show as typed


def _shown(thinking: str, answer: str, with_thinking: bool) -> Any:
    if not with_thinking:
        return answer
    return [gr.ChatMessage(role="assistant", content=thinking, metadata={"title": THINKING_TITLE}),
            gr.ChatMessage(role="assistant", content=answer)]


def build_demo(model, processor, decoding: Decoding | None = None, title: str = "ovis-lit") -> gr.ChatInterface:
    decoding = (decoding or Decoding()).check(processor)

    def respond(message: dict, history: list[dict], think: bool = False) -> Iterator[Any]:
        # What cannot be answered is told in a warning and the message stays unanswered (the next turns leave it
        # out): raising gr.Error instead would leave the textbox disabled (Gradio 6.31's ChatInterface)
        try:
            turns, images = conversation_from_history(history)
            attached = [open_local_image(path) for path in message_files(message)]
        except Rejected as e:
            _warn(refusal(e))
            return
        text = (message.get("text") or "").strip()
        if not text and not attached:
            _warn("type a message or attach an image")
            return
        session = ChatSession(model, processor, replace(decoding, thinking=bool(think)))
        session.turns, session.images = turns, images
        try:
            for thinking, answer in stream_answer(session, text, attached):
                yield _shown(thinking, answer, bool(think))
        except Rejected as e:
            _warn(refusal(e))
        except ValueError as e:
            _warn(f"cannot answer this message: {e}")

    extra = []
    if processor.takes_thinking:
        extra = [gr.Checkbox(value=decoding.thinking, label="Think before answering (Ovis2.5)")]
    return gr.ChatInterface(
        respond, multimodal=True, title=title, analytics_enabled=False, concurrency_limit=1,
        textbox=gr.MultimodalTextbox(file_types=["image"], file_count="multiple", placeholder="Ask about an image"),
        chatbot=gr.Chatbot(render_markdown=False, elem_id="chat"),  # the model's text as it is, not as Markdown
        additional_inputs=extra or None,
    )


def serve(demo: gr.ChatInterface, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serves until interrupted: on `host` only, no share link, no server-side rendering (no Node needed)."""
    demo.queue().launch(server_name=host, server_port=port, share=False, ssr_mode=False, inbrowser=False,
                        footer_links=[])
