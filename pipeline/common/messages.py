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


# A library's error text that says where, not what: the stack TensorFlow writes into its messages, its node
# and op tags, and the reprs of tensors and specs (hundreds of characters each).
_STACK = re.compile(r'\s*(?:defined at )?\(most recent call last\):?|\s*File "[^"]*", line \d+, in [^\s]+')
_TAGS = re.compile(r"\[\[\{\{node [^}]*\}\}\]\]|\[Op:[^\]]*\]|\bname: [\w/]+$")
_REPR = re.compile(r"\b([A-Z]\w+)\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)")  # Name(...), parentheses nested twice


LIBRARY_SENTENCES_CHARS = 120  # what of a library's message fits an error line beside ours


def library_error(exc: BaseException) -> str:
    """A library's exception as `Type: what it says`, on one line, without the stack, node tags and long
    reprs TensorFlow and Keras put into their messages — so the cause, which they put last, survives."""
    text = _TAGS.sub("", _STACK.sub("", " ".join(str(exc).split())))
    text = _REPR.sub(lambda m: m.group(0) if len(m.group(0)) <= 40 else f"{m.group(1)}(…)", text)
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(text.split()))
    kept = sentences[0]
    for sentence in sentences[1:]:  # the next sentences while they fit: Keras often puts the cause second
        if len(kept) + len(sentence) > LIBRARY_SENTENCES_CHARS:
            break
        kept += " " + sentence
    return f"{type(exc).__name__}: {kept or '(no message)'}"
