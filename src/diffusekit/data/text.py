"""Text as sequences of character tokens: one document cut into windows (``text:FILE[:LENGTH]``) or one sequence per
line (``lines:FILE[:LENGTH]``: log lines, URLs, commands). The vocabulary is the characters of the training text; it is
saved in the run like any codec, so new text is read with the training text's tokens."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import DiffusekitError

PAD, UNK = 0, 1  # a line's end (lines are padded to the window) and a character the training text never had
SPECIAL = 2
DEFAULT_LENGTH = {"text": 128, "lines": 0}  # lines: 0 = the longest line's length
MAX_LENGTH = 4096


class TextCodec:
    """Characters <-> token ids [N, length]: PAD (0) after a line's end, UNK (1) for a character not in `vocab`,
    vocab[i] as SPECIAL + i. mode "text" (windows of one document, every position a character) or "lines"."""
    kind = "text"
    target = None

    def __init__(self, vocab, length: int, mode: str = "text"):
        self.vocab, self.length, self.mode = list(vocab), int(length), mode
        self._index = {c: SPECIAL + i for i, c in enumerate(self.vocab)}

    @property
    def shape(self):
        return (self.length,)

    @property
    def never(self) -> list:
        """Ids a model of this text never produces: UNK, and PAD inside a window of a document."""
        return [UNK] if self.mode == "lines" else [PAD, UNK]

    @property
    def tokens(self) -> int:
        """Token ids the data use: PAD, UNK and the vocabulary (a model adds its MASK after them)."""
        return SPECIAL + len(self.vocab)

    @classmethod
    def fit(cls, texts, length: int, mode: str) -> "TextCodec":
        return cls(sorted(set().union(*map(set, texts))), length, mode)

    def encode(self, texts, unseen: list | None = None, masked: str | None = None) -> torch.Tensor:
        """Strings (each at most `length` characters) -> LongTensor [N, length]. A character absent from the vocabulary
        is an error, unless `unseen` is a list: then it becomes UNK and (row, position, character) is appended.
        masked: a character that marks positions to fill, given the id -1."""
        out = np.full((len(texts), self.length), PAD, dtype=np.int64)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DiffusekitError(f"text must be strings, got {type(t).__name__} (row {i + 1})")
            if len(t) > self.length:
                raise DiffusekitError(f"row {i + 1} has {len(t)} characters; the model reads at most {self.length} "
                                      f"(its window): cut or split the line")
            for j, c in enumerate(t):
                k = -1 if c == masked else self._index.get(c)
                if k is None:
                    if unseen is None:
                        raise DiffusekitError(f"row {i + 1} holds the character {c!r}, which the training text never "
                                              f"had")
                    unseen.append((i, j, c))
                    k = UNK
                out[i, j] = k
        return torch.from_numpy(out)

    def decode(self, tokens) -> list:
        """LongTensor [N, length] -> strings (a line ends at its first PAD; UNK reads as U+FFFD)."""
        chars = ["", "\ufffd", *self.vocab]
        out = []
        for row in torch.as_tensor(tokens).tolist():
            if self.mode == "lines" and PAD in row:
                row = row[:row.index(PAD)]
            out.append("".join(chars[k] if 0 <= k < len(chars) else "\ufffd" for k in row))
        return out

    def to_dict(self) -> dict:
        return {"kind": "text", "vocab": "".join(self.vocab), "length": self.length, "mode": self.mode}

    @classmethod
    def from_dict(cls, d: dict) -> "TextCodec":
        return cls(list(d["vocab"]), d["length"], d["mode"])


def read_text(path: str) -> str:
    """A UTF-8 text file (a byte-order mark tolerated), with one-line errors for a missing, binary or empty one."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DiffusekitError(f"cannot read {path}: {e.strerror or e}") from None
    if b"\x00" in raw:
        raise DiffusekitError(f"{path} is a binary file (it holds NUL bytes), not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DiffusekitError(f"{path} is not UTF-8 text (byte {e.start}): convert it to UTF-8") from None
    if not text.strip():
        raise DiffusekitError(f"{path} holds no text")
    return text


def text_windows(text: str, length: int) -> list:
    """One document as consecutive windows of `length` characters (a last, shorter piece is dropped)."""
    return [text[i:i + length] for i in range(0, len(text) - length + 1, length)]


def text_lines(text: str) -> list:
    """The non-empty lines of a file, without their line breaks."""
    return [ln for ln in text.splitlines() if ln.strip()]


def load_text(mode: str, rest: str):
    """(texts, codec) of a `text:FILE[:LENGTH]` or `lines:FILE[:LENGTH]` spec."""
    path, _, length = rest.rpartition(":") if rest.rpartition(":")[2].isdigit() else (rest, "", "")
    if not path:
        raise DiffusekitError(f"{mode}: needs a file, e.g. {mode}:corpus.txt or {mode}:corpus.txt:128")
    n = int(length) if length else DEFAULT_LENGTH[mode]
    text = read_text(path)
    if mode == "text":
        if not 2 <= n <= MAX_LENGTH:
            raise DiffusekitError(f"text window must be 2-{MAX_LENGTH} characters, got {n}")
        texts = text_windows(text, n)
        if not texts:
            raise DiffusekitError(f"{path} holds {len(text)} characters, fewer than one window of {n}")
    else:
        texts = text_lines(text)
        if not texts:
            raise DiffusekitError(f"{path} holds no lines")
        longest = max(map(len, texts))
        n = n or longest
        if not 1 <= n <= MAX_LENGTH:
            raise DiffusekitError(f"line window must be 1-{MAX_LENGTH} characters, got {n}")
        if longest > n:
            i = next(i for i, t in enumerate(texts) if len(t) > n)
            raise DiffusekitError(f"{path}: line {i + 1} has {len(texts[i])} characters, more than the window of {n}: "
                                  f"give a longer window ({mode}:{path}:{longest}) or cut the line")
    return texts, TextCodec.fit(texts, n, mode)


def typed_texts(text: str, codec: TextCodec) -> list:
    """Typed or pasted text as a model's items: a document's windows (a run of text:FILE) or the non-empty lines."""
    items = text_windows(text or "", codec.length) if codec.mode == "text" else text_lines(text or "")
    if not items:
        raise DiffusekitError(f"give at least {codec.length} characters (this model reads windows of {codec.length})"
                              if codec.mode == "text" else "give one line of text or more", "data")
    return items


def read_texts(data, codec: TextCodec) -> list:
    """Text for a model of `codec`, as strings of at most its window: a `text:FILE` spec (windows of the model's
    length), a `lines:FILE` spec or a plain text file (its lines), or a list of strings."""
    if isinstance(data, (str, os.PathLike)):
        spec = os.fspath(data)
        mode, _, rest = spec.partition(":")
        if mode in ("text", "lines") and rest:
            path = rest.rpartition(":")[0] if rest.rpartition(":")[2].isdigit() else rest
            text = read_text(path)
            texts = text_windows(text, codec.length) if mode == "text" else text_lines(text)
            if not texts:
                raise DiffusekitError(f"{path} holds fewer than {codec.length} characters (one window)")
            return texts
        return text_lines(read_text(spec))
    if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data) and data:
        return list(data)
    raise DiffusekitError("text data are a text:FILE or lines:FILE spec, a text file, or a list of strings", "data")
