"""Reading delimited text files with errors that name the file, line and byte.

Both input readers (``surveys`` for GlobalOpinionQA and WVS microdata, ``consultation`` for
Polis exports) go through these helpers, because pandas on its own reports an undecodable byte
as a bare ``UnicodeDecodeError`` with no file name, and silently shifts or drops fields on a
row with the wrong number of fields (an extra field becomes the index, a missing one NaN).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterable
from pathlib import Path

_CHUNK = 1 << 20


class CsvInputError(ValueError):
    """A delimited text file that cannot be read as written; the message names file and line."""


def _undecodable(path: Path, raw: bytes, start: int, offset: int, what: str,
                 error: type[ValueError]) -> ValueError:
    """The error for a byte at ``offset`` (``start`` into ``raw``) that is not UTF-8."""
    line = raw[:start].count(b"\n") + 1
    return error(
        f"{path}: not UTF-8 (byte {raw[start]:#04x} at offset {offset}, line {line} of the {what}); "
        "re-save the file as UTF-8"
    )


def decode_utf8(path: Path | str, raw: bytes, what: str = "file",
                error: type[ValueError] = CsvInputError) -> str:
    """``raw`` (the bytes of ``path``) as text; a BOM is dropped, a bad byte or NUL is an error."""
    path = Path(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bom = 3 if raw.startswith(codecs.BOM_UTF8) else 0
        raise _undecodable(path, raw, err.start + bom, err.start + bom, what, error) from err
    if "\x00" in text:
        offset = raw.index(b"\x00")
        line = raw[:offset].count(b"\n") + 1
        raise error(f"{path}: {what} holds a NUL byte at offset {offset} "
                    f"(line {line}): a binary file, not CSV text")
    return text


def read_utf8(path: Path | str, what: str = "file", error: type[ValueError] = CsvInputError) -> str:
    """The whole of ``path`` as UTF-8 text; errors name the file (missing, empty, undecodable)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found (expected a {what})")
    raw = path.read_bytes()
    if not raw.strip():
        raise error(f"{path}: file is empty (expected a {what})")
    return decode_utf8(path, raw, what, error)


def check_utf8_stream(path: Path | str, what: str = "file",
                      error: type[ValueError] = CsvInputError) -> None:
    """Check that all of a (possibly large) file is UTF-8 without holding it in memory twice.

    Checking only the head (as the WVS loader once did) let a bad byte further down surface
    as pandas' bare ``UnicodeDecodeError``."""
    path = Path(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 0  # of the first byte of ``chunk``; newlines before it
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            carried = decoder.getstate()[0]  # start of a character cut at the last chunk's end
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                data = carried + chunk  # what the decoder saw; err.start indexes it
                at = offset - len(carried) + err.start
                line = lines + data[:err.start].count(b"\n") + 1
                raise error(
                    f"{path}: not UTF-8 (byte {data[err.start]:#04x} at offset {at}, line {line} "
                    f"of the {what}); re-save the file as UTF-8"
                ) from err
            offset += len(chunk)
            lines += chunk.count(b"\n")
        carried = decoder.getstate()[0]
        if carried:
            raise error(f"{path}: not UTF-8 ({what} ends inside a multi-byte character: byte "
                        f"{carried[0]:#04x} at offset {offset - len(carried)})")


def check_rectangular(path: Path | str, text: str, sep: str = ",", what: str = "file",
                      error: type[ValueError] = CsvInputError) -> None:
    """Every non-blank row has as many fields as the header, else an error names the line.

    pandas reads a row with one field too many by turning the first column into the index
    (so every column shifts by one), and one with too few by filling NaN; neither is what
    the file's author meant."""
    _check_rows(path, text.splitlines(keepends=True), sep, what, error)


def check_rectangular_file(path: Path | str, sep: str = ",", what: str = "file",
                           error: type[ValueError] = CsvInputError) -> None:
    """:func:`check_rectangular` streamed over a large (already UTF-8-checked) file."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        _check_rows(path, fh, sep, what, error)


def _check_rows(path: Path | str, lines: Iterable[str], sep: str, what: str,
                error: type[ValueError]) -> None:
    reader = csv.reader(lines, delimiter=sep)
    header: list[str] | None = None
    try:
        for row in reader:
            if not row:
                continue  # blank line: pandas skips it too
            if header is None:
                header = row
                continue
            if len(row) != len(header):
                extra = "" if len(row) < len(header) else (
                    " (a trailing delimiter?)" if row[-1] == "" else "")
                raise error(
                    f"{path}: line {reader.line_num} of {what} has {len(row)} fields but the header "
                    f"has {len(header)}{extra}; fix or remove that row"
                )
    except csv.Error as err:
        raise error(f"{path}: line {reader.line_num} of {what} is not valid CSV: {err}") from err


def read_csv_text(path: Path | str, sep: str = ",", what: str = "file",
                  error: type[ValueError] = CsvInputError) -> str:
    """UTF-8 text of a delimited file whose rows all match the header; hand it to pandas."""
    text = read_utf8(path, what, error)
    check_rectangular(path, text, sep, what, error)
    return text
