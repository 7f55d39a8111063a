"""Reading TOML as text: tables, keys and values are located by line and
never re-serialised, so a user's file keeps its bytes when we edit it.
(Python 3.8 has no TOML parser; containerd's config is all this reads.)"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class TomlItem:
    """One statement of a TOML file, by line range (end exclusive)."""

    kind: str  # "table" | "array-table" | "key" | "other" (blank line, comment)
    start: int
    end: int
    path: Tuple[str, ...] = ()  # the table's path, or the key's (dotted keys)
    value: str = ""  # a key's value text, comments removed
    # where the value's strings and first "[" are, as offsets into the raw statement
    strings: Tuple[Tuple[int, int, str], ...] = ()
    open_bracket: int = -1


@dataclass
class _ValueScanner:
    """Follows a value across lines: strings, brackets, comments."""

    pos: int = 0
    depth: int = 0
    quote: str = ""
    text: str = ""
    strings: List[Tuple[int, int, str]] = field(default_factory=list)
    open_bracket: int = -1
    _string_start: int = 0  # offset of the open string's quote
    _string_text_start: int = 0  # and its index in self.text

    @property
    def complete(self) -> bool:
        return self.depth <= 0 and self.quote not in ('"""', "'''")

    def feed(self, chunk: str) -> None:
        i = 0
        while i < len(chunk):
            c = chunk[i]
            if self.quote:
                if c == "\n" and len(self.quote) == 1:  # an unclosed one-line string
                    self.quote = ""
                elif c == "\\" and self.quote in ('"', '"""'):
                    self.text += chunk[i : i + 2]
                    i += 2
                    continue
                elif chunk.startswith(self.quote, i):
                    self.text += self.quote
                    self._close_string(self.pos + i + len(self.quote))
                    i += len(self.quote)
                    self.quote = ""
                    continue
                self.text += c
                i += 1
                continue
            if c == "#":
                newline = chunk.find("\n", i)
                i = len(chunk) if newline < 0 else newline
                continue
            opened = next((q for q in ('"""', "'''", '"', "'") if chunk.startswith(q, i)), "")
            if opened:
                self.quote = opened
                self._string_start = self.pos + i
                self._string_text_start = len(self.text)
                self.text += opened
                i += len(opened)
                continue
            if c in "[{":
                if c == "[" and self.depth == 0 and self.open_bracket < 0:
                    self.open_bracket = self.pos + i
                self.depth += 1
            elif c in "]}":
                self.depth -= 1
            self.text += c
            i += 1
        self.pos += len(chunk)

    def _close_string(self, end: int) -> None:
        literal = self.text[self._string_text_start :]
        self.strings.append((self._string_start, end, _unquote(literal)))


def _unquote(literal: str) -> str:
    for quote in ('"""', "'''", '"', "'"):
        if literal.startswith(quote) and literal.endswith(quote) and len(literal) >= 2 * len(quote):
            inner = literal[len(quote) : -len(quote)]
            if quote.startswith('"'):
                try:
                    return str(json.loads('"' + inner.replace("\n", "\\n") + '"'))
                except ValueError:
                    return inner
            return inner
    return literal


def key_path(text: str) -> Tuple[str, ...]:
    """'plugins."io.containerd.grpc.v1.cri".cni' -> (plugins, io.containerd.grpc.v1.cri, cni)."""
    parts: List[str] = []
    bare = ""
    i = 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < len(text) and text[j] != c:
                j += 2 if c == '"' and text[j] == "\\" else 1
            parts.append(_unquote(text[i : j + 1]))
            i = j + 1
        elif c == "." or c.isspace():
            if bare:
                parts.append(bare)
                bare = ""
            i += 1
        else:
            bare += c
            i += 1
    if bare:
        parts.append(bare)
    return tuple(parts)


def _split_key(line: str) -> Optional[int]:
    """The index of the '=' that ends a key, or None."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "=":
            return i
        elif c == "#":
            return None
    return None


def _header_path(stripped: str) -> Tuple[bool, Tuple[str, ...]]:
    array = stripped.startswith("[[")
    inner = stripped[2:] if array else stripped[1:]
    quote, end = "", len(inner)
    for i, c in enumerate(inner):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "]":
            end = i
            break
    return array, key_path(inner[:end])


def scan_toml(text: str) -> Tuple[List[str], List[TomlItem]]:
    """The file's lines (with their endings) and its statements, in order."""
    lines = text.splitlines(keepends=True)
    items: List[TomlItem] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            items.append(TomlItem("other", i, i + 1))
            i += 1
            continue
        if stripped.startswith("["):
            array, path = _header_path(stripped)
            items.append(TomlItem("array-table" if array else "table", i, i + 1, path))
            i += 1
            continue
        equals = _split_key(lines[i])
        if equals is None:
            items.append(TomlItem("other", i, i + 1))
            i += 1
            continue
        scanner = _ValueScanner(pos=equals + 1)
        scanner.feed(lines[i][equals + 1 :])
        j = i + 1
        while not scanner.complete and j < len(lines):
            scanner.feed(lines[j])
            j += 1
        items.append(
            TomlItem(
                "key",
                i,
                j,
                key_path(lines[i][:equals]),
                scanner.text.strip(),
                tuple(scanner.strings),
                scanner.open_bracket,
            )
        )
        i = j
    return lines, items


def scalar(value: str) -> str:
    """A simple value as text: strings unquoted, anything else as written."""
    return _unquote(value.strip())


def string_list(value: str) -> List[str]:
    scanner = _ValueScanner()
    scanner.feed(value)
    return [text for _, _, text in scanner.strings]


def flatten(text: str) -> Dict[Tuple[str, ...], str]:
    """Every key of a TOML text by its full path -> its value text."""
    _, items = scan_toml(text)
    values: Dict[Tuple[str, ...], str] = {}
    table: Tuple[str, ...] = ()
    for item in items:
        if item.kind in ("table", "array-table"):
            table = item.path
        elif item.kind == "key":
            values[table + item.path] = item.value
    return values


def toml_header(path: Sequence[str]) -> str:
    return "[" + ".".join(p if _BARE_KEY.match(p) else json.dumps(p) for p in path) + "]"
