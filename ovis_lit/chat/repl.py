"""The interactive loop of chat.py: messages, `/` commands, and the streamed answers on the terminal."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from PIL import Image

from ..rejection import Rejected
from .images import open_local_image, refusal
from .session import ChatSession
from .streaming import THINKING

HELP = """Type a message and press Enter; the answer streams as it is generated. Commands:
  /image PATH     attach a local image to your next message (repeat for several; quote paths with spaces)
  /reset          forget the conversation and its images
  /think on|off   think before answering (Ovis2.5 checkpoints)
  /help           this text
  /quit           leave (or Ctrl-D)"""


class Terminal:
    """Streams an answer to `out`: the thinking (when on) after a "[thinking]" line, then the answer."""

    def __init__(self, out: TextIO):
        self.out, self.part = out, None

    def start(self) -> None:
        self.part = None

    def __call__(self, text: str, part: str) -> None:
        if part != self.part:
            if part == THINKING:
                self.out.write("[thinking]\n")
            elif self.part == THINKING:
                self.out.write("\n[answer]\n")
            self.part = part
        self.out.write(text)
        self.out.flush()


def lines_from(read: Callable[[str], str]) -> Iterator[str]:
    while True:
        try:
            yield read("you> ")
        except EOFError:
            return


def chat_loop(session: ChatSession, lines: Iterator[str], out: TextIO = sys.stdout) -> None:
    """Reads messages and commands from `lines` until they end or /quit. Nothing a person types stops the loop with a
    traceback: a refused image, an unknown command or a message the model cannot take is explained instead."""
    pending: list[Image.Image] = []  # images attached to the next message
    terminal = Terminal(out)
    out.write(HELP + "\n")
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, rest = line.partition(" ")
            if command in ("/quit", "/exit"):
                break
            if command == "/help":
                out.write(HELP + "\n")
            elif command == "/reset":
                session.reset()
                pending = []
                out.write("(conversation reset)\n")
            elif command == "/image":
                try:
                    paths = shlex.split(rest)
                except ValueError as e:
                    out.write(f"cannot read the path: {e}\n")
                    continue
                if not paths:
                    out.write("usage: /image PATH\n")
                for path in paths:
                    try:
                        pending.append(open_local_image(path))
                        out.write(f"(image {path} attached to your next message)\n")
                    except Rejected as e:
                        out.write(refusal(e) + "\n")
            elif command == "/think":
                setting = rest.strip().lower()
                if setting not in ("on", "off"):
                    out.write("usage: /think on|off\n")
                    continue
                try:
                    session.set_thinking(setting == "on")
                except ValueError as e:
                    out.write(f"{e}\n")
                    continue
                out.write(f"(thinking {setting})\n")
            else:
                out.write(f"unknown command {command}; /help lists them\n")
            continue
        terminal.start()
        out.write("model> ")
        try:
            answer = session.ask(line, pending, on_text=terminal)
            pending = []
            if terminal.part == THINKING and answer:
                out.write("\n[the thinking did not end within max_new_tokens: all of it is kept as the answer]")
        except Rejected as e:  # e.g. an image the processor cannot resize: the message is not sent
            out.write(f"\n{refusal(e)}\n")
        except ValueError as e:  # e.g. more <image> marks than images: the message is not sent
            out.write(f"\ncannot send this message: {e}\n")
        out.write("\n")
        out.flush()
