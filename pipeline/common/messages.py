"""One-line messages for a person: what the CLI prints on error, and how a long one is shortened.

An error is one line a person reads at once (`ERROR_LINE_CHARS`); the whole message is there with
`--debug`. A message too long for the line loses, in this order: terminal escape codes and line breaks,
the middle folders of long paths, parenthesised detail (a library's own wording, quoted in ours), and
then its start — never its end, which says what went wrong and what to do (`SHORTENED` marks the cut).
"""

from __future__ import annotations

import re

ERROR_LINE_CHARS = 200
SHORTENED = "… "  # where a message lost its start to fit its line: right after the line's kind ("error: … ")
# Terminal control sequences that library messages (Keras's) carry: never printed, they garble a log.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|[\x00-\x08\x0b-\x1f\x7f]")
_LONG_PATH = re.compile(r"(?<![\w.])/(?:[^\s/]+/){3,}[^\s/]+")  # an absolute path four or more folders deep
_KIND = re.compile(r"^[\w-]+: ")
_PARENTHESISED = re.compile(r" \([^()]*\)")  # innermost first: nested detail goes before what holds it


def _short_path(match: re.Match) -> str:
    path = match.group(0)
    return path if len(path) <= 40 else "…/" + "/".join(path.rsplit("/", 2)[-2:])


def plain(message: str) -> str:
    """`message` on one line: escape codes out, whitespace folded, long absolute paths shortened to their
    last two parts (`…/folder/model.h5`)."""
    return _LONG_PATH.sub(_short_path, " ".join(_ESCAPES.sub("", message).split()))


def one_line(message: str, limit: int = ERROR_LINE_CHARS) -> str:
    """`message` as one plain line of at most `limit` characters (see the module's docstring for what a
    long one loses, and in which order)."""
    text = plain(message)
    while len(text) > limit:
        parts = list(_PARENTHESISED.finditer(text))
        if not parts:
            break
        longest = max(parts, key=lambda m: len(m.group(0)))
        text = text[: longest.start()] + text[longest.end():]
    if len(text) <= limit:
        return text
    prefix = _KIND.match(text)  # "error: ", "native: ": the kind of line stays
    head = prefix.group(0) if prefix else ""
    return f"{head}{SHORTENED}{text[len(text) - (limit - len(head) - len(SHORTENED)):]}"


def was_shortened(line: str) -> bool:
    """Whether `one_line` cut the start of `line` to fit it."""
    kind = _KIND.match(line)
    return line[len(kind.group(0)) if kind else 0:].startswith(SHORTENED)
